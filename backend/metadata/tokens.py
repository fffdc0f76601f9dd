"""Device tokens: one per device or login, listed and revoked by name; one-time login codes.

A device logs in with a code an administrator issued (`cirrus admin login-code`): the code
is 256 random bits, valid once and for a short time, and is exchanged for a token of the
device's own (POST /v1/login). Nothing long-lived travels to set a device up, and since a
code cannot be guessed, the login needs no password rules or rate limit. Revoking a device's
token leaves the user's other devices working.
"""

import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from backend.db.models import DEVICE_LEN, LoginCode, Token, User
from backend.metadata.txn import Database
from backend.metadata.types import iso_from_ns
from backend.metadata.users import check_device, hash_token, new_secret
from backend.protocol.errors import InvalidRequest, NotFound, Unauthorized

LOGIN_CODE_TTL_S = 15 * 60
MAX_LOGIN_CODE_TTL_S = 7 * 24 * 3600
DEFAULT_DEVICE = "device"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    name: str
    created: int
    last_used: int | None
    revoked: int | None

    def to_json(self) -> dict:
        def iso(ns: int | None) -> str | None:
            return None if ns is None else iso_from_ns(ns)

        return {
            "name": self.name,
            "created": iso(self.created),
            "last_used": iso(self.last_used),
            "revoked": iso(self.revoked),
        }


@dataclass(frozen=True, slots=True)
class NewToken:
    user: str
    name: str
    token: str


class Tokens:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list(self, user_name: str) -> list[TokenInfo]:
        """The user's tokens, live ones first, each group oldest first."""
        with self.db.read() as session:
            user_id = _user_id(session, user_name)
            rows = session.execute(
                select(Token.name, Token.created, Token.last_used, Token.revoked)
                .where(Token.user_id == user_id)
                .order_by(Token.revoked.is_not(None), Token.created, Token.id)
            ).all()
        return [TokenInfo(*row) for row in rows]

    def revoke(self, user_name: str, token_name: str) -> None:
        """Revoke the user's live token of that name; NotFound when there is none."""
        with self.db.write_session() as session:
            user_id = _user_id(session, user_name)
            done = session.execute(
                update(Token)
                .where(Token.user_id == user_id, Token.name == token_name, Token.revoked.is_(None))
                .values(revoked=time.time_ns())
            )
            if done.rowcount != 1:
                raise NotFound(f"user {user_name!r} has no live token named {token_name!r}")

    def create_login_code(self, user_name: str, ttl_s: int = LOGIN_CODE_TTL_S) -> str:
        if not 1 <= ttl_s <= MAX_LOGIN_CODE_TTL_S:
            raise InvalidRequest(f"a login code lives 1 s to {MAX_LOGIN_CODE_TTL_S} s")
        code = new_secret()
        now = time.time_ns()
        with self.db.write_session() as session:
            user_id = _user_id(session, user_name)
            session.execute(delete(LoginCode).where(LoginCode.expires < now))
            session.add(
                LoginCode(
                    code_hash=hash_token(code),
                    user_id=user_id,
                    created=now,
                    expires=now + ttl_s * 10**9,
                )
            )
        return code

    def login(self, code: str, device: str | None) -> NewToken:
        """Spend a login code on a new token named after the device (made unique among
        the user's live tokens by a suffix: "laptop", "laptop-2" ...)."""
        base = check_device(device) or DEFAULT_DEVICE
        token = new_secret()
        now = time.time_ns()
        with self.db.write_session() as session:
            found = session.execute(
                delete(LoginCode)
                .where(LoginCode.code_hash == hash_token(code), LoginCode.expires >= now)
                .returning(LoginCode.user_id)
            ).one_or_none()
            if found is None:
                raise Unauthorized("unknown, used or expired login code")
            user_id = found[0]
            name = _free_name(session, user_id, base)
            session.add(
                Token(user_id=user_id, token_hash=hash_token(token), created=now, name=name)
            )
            user_name = session.scalar(select(User.name).where(User.id == user_id))
        return NewToken(user_name, name, token)


def _user_id(session, user_name: str) -> int:
    user_id = session.scalar(select(User.id).where(User.name == user_name))
    if user_id is None:
        raise NotFound(f"no user {user_name!r}")
    return user_id


def _free_name(session, user_id: int, base: str) -> str:
    taken = set(
        session.scalars(select(Token.name).where(Token.user_id == user_id, Token.revoked.is_(None)))
    )
    name, number = base, 1
    while name in taken:
        number += 1
        suffix = f"-{number}"
        name = base[: DEVICE_LEN - len(suffix)] + suffix
    return name
