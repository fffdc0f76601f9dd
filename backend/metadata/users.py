"""Users, their API tokens and devices: who is asking, and what their drive holds."""

import hashlib
import re
import secrets
import threading
import time

from sqlalchemy import false, func, select, update

from backend.db.engine import insert_ignore
from backend.db.models import DEVICE_LEN, DIR, FILE, Device, Namespace, Node, Token, User
from backend.metadata.txn import Database
from backend.metadata.types import Principal
from backend.protocol.errors import AlreadyExists, InvalidRequest, Unauthorized

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_MAX_TOKEN_LEN = 256
ROOT_MODE = 0o755
# How long a resolved token is trusted without asking the database again. A token revoked
# through another server (or `cirrus admin revoke`) is refused by this one within this bound;
# the cache still spares the query for bursts (thousands of long polls reconnecting at once).
TOKEN_CACHE_S = 0.5
# A token's last_used is written when the stored one is older than this.
LAST_USED_STEP_NS = 60 * 10**9
INITIAL_TOKEN_NAME = "initial"
_TOKEN_CACHE_MAX = 100_000


def new_secret() -> str:
    """256 random bits in URL-safe base64 for a token or login code. Never starting with
    "-": people paste them after an option (`cirrus login URL --code CODE`), where one that
    looks like an option is refused."""
    secret = secrets.token_urlsafe(32)
    return "_" + secret[1:] if secret.startswith("-") else secret


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_device(device: object) -> str | None:
    if device is None:
        return None
    if not isinstance(device, str) or not 1 <= len(device) <= DEVICE_LEN:
        raise InvalidRequest(f"a device name has 1 to {DEVICE_LEN} characters")
    if not device.isprintable():
        raise InvalidRequest("a device name has printable characters only")
    return device


class Users:
    def __init__(self, db: Database) -> None:
        self.db = db
        # (user id, device) pairs known to be recorded: spares a query per request.
        self._devices: set[tuple[int, str]] = set()
        # token hash → ((user id, user name, namespace id), expiry): spares the query that
        # would otherwise run for every request, thousands at once when long polls reconnect.
        self._tokens: dict[str, tuple[tuple[int, str, int], float]] = {}
        self._lock = threading.Lock()

    def create_user(self, name: str) -> str:
        if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
            raise InvalidRequest("a user name has 1-64 letters, digits, '.', '_', '@' or '-'")
        token = new_secret()
        now = time.time_ns()
        with self.db.write_session() as session:
            if session.scalar(select(User.id).where(User.name == name)) is not None:
                raise AlreadyExists(f"user {name!r} exists")
            user = User(name=name, created=now)
            session.add(user)
            session.flush()
            namespace = Namespace(user_id=user.id, cursor=0, bytes_received=0)
            session.add(namespace)
            session.add(
                Token(
                    user_id=user.id,
                    token_hash=hash_token(token),
                    created=now,
                    name=INITIAL_TOKEN_NAME,
                )
            )
            session.flush()
            root = Node(
                namespace_id=namespace.id,
                parent_id=None,
                name="",
                type=DIR,
                mode=ROOT_MODE,
                mtime_ns=now,
                xattrs={},
                deleted=False,
            )
            session.add(root)
        return token

    def authenticate_cached(self, token: str, device: str | None) -> Principal | None:
        """The caller from memory alone, or None when that needs the database (no I/O here,
        so the event loop may call it directly)."""
        if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN_LEN:
            raise Unauthorized("unknown token")
        device = check_device(device)
        with self._lock:
            known = self._tokens.get(hash_token(token))
            if known is None or known[1] < time.monotonic():
                return None
            user_id, user_name, namespace_id = known[0]
            if device is not None and (user_id, device) not in self._devices:
                return None
        return Principal(user_id, user_name, namespace_id, device)

    def authenticate(self, token: str, device: str | None) -> Principal:
        cached = self.authenticate_cached(token, device)
        if cached is not None:
            return cached
        token_hash = hash_token(token)
        with self.db.read() as session:
            query = (
                select(User.id, User.name, Namespace.id, Token.id, Token.last_used)
                .join(Token, Token.user_id == User.id)
                .join(Namespace, Namespace.user_id == User.id)
                .where(Token.token_hash == token_hash, Token.revoked.is_(None))
            )
            found = session.execute(query).one_or_none()
        if found is None:
            raise Unauthorized("unknown or revoked token")
        user_id, user_name, namespace_id, token_id, last_used = found
        row = (user_id, user_name, namespace_id)
        self._note_use(token_id, last_used)
        if device is not None:
            self._remember_device(user_id, device)
        with self._lock:
            if len(self._tokens) >= _TOKEN_CACHE_MAX:
                self._tokens.clear()
            self._tokens[token_hash] = (row, time.monotonic() + TOKEN_CACHE_S)
        return Principal(user_id, user_name, namespace_id, device)

    def _note_use(self, token_id: int, last_used: int | None) -> None:
        """Record that the token was used, at most once a minute (not a write per request)."""
        now = time.time_ns()
        if last_used is not None and now - last_used < LAST_USED_STEP_NS:
            return
        with self.db.write_session() as session:
            session.execute(update(Token).where(Token.id == token_id).values(last_used=now))

    def _remember_device(self, user_id: int, device: str) -> None:
        with self._lock:
            if (user_id, device) in self._devices:
                return
        row = {"user_id": user_id, "name": device, "created": time.time_ns()}
        with self.db.write_session() as session:
            insert_ignore(session, Device, [row])
        with self._lock:
            self._devices.add((user_id, device))

    def account(self, who: Principal) -> dict:
        with self.db.read() as session:
            namespace = session.get(Namespace, who.namespace_id)
            used, files = session.execute(
                select(func.coalesce(func.sum(Node.size), 0), func.count(Node.id)).where(
                    Node.namespace_id == who.namespace_id,
                    Node.type == FILE,
                    Node.deleted == false(),
                )
            ).one()
        return {
            "user": who.user_name,
            "namespace_id": who.namespace_id,
            "cursor": namespace.cursor,
            "used_bytes": int(used),
            "files": int(files),
            "bytes_received": namespace.bytes_received,
        }
