"""Which master keys a drive knows: a check value per key id in the database.

Servers of one drive must share its keys. A server given another key than its peers would
seal new blocks that they cannot open and fail to open theirs, so every key a server holds
must be one the drive knows: the first server to start records its key as key 1, and a
later start with an unknown key is refused. Rotation (docs/cluster.md) registers a new key
under the next id (`cirrus admin add-key`); stored blocks name the id of the key that
sealed them (backend/blocks.py).
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from backend.blocks import FIRST_KEY_ID
from backend.config import ServerConfig
from backend.db import writer
from backend.db.engine import insert_ignore
from backend.db.models import MasterKey
from backend.keys import key_check_value, load_master_key, read_key_file


class WrongMasterKey(ValueError):
    """A key the drive does not know: not the one its blocks are sealed with."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The key a server seals with, its id, and the older keys it still reads, by id."""

    current: bytes
    current_id: int
    readable: dict[int, bytes] = field(default_factory=dict)


def open_key_ring(config: ServerConfig, engine: Engine) -> KeyRing:
    """The configured keys with their ids; a drive with no key yet records the current one."""
    current = load_master_key(config.key_file, config.master_key_path)
    ids = _known_ids(engine, current)
    current_id = ids.get(key_check_value(current))
    if current_id is None:
        raise WrongMasterKey(
            "the master key differs from the one this drive's blocks are sealed with "
            f"(check value {key_check_value(current)[:8]}…); give this server its peers' key "
            "(key_file or $CIRRUS_MASTER_KEY), or register a new one with cirrus admin add-key"
        )
    readable = {}
    for path in config.read_key_files:
        key = read_key_file(path)
        key_id = ids.get(key_check_value(key))
        if key_id is None:
            raise WrongMasterKey(f"read key file {path} holds no key of this drive")
        readable[key_id] = key
    return KeyRing(current, current_id, readable)


def _known_ids(engine: Engine, first: bytes) -> dict[str, int]:
    """Every registered key id by check value, after recording first as key 1 if none is."""
    row = {"id": FIRST_KEY_ID, "check_value": key_check_value(first), "created": time.time_ns()}
    with Session(writer(engine)) as session, session.begin():
        insert_ignore(session, MasterKey, [row])
        rows = session.execute(select(MasterKey.check_value, MasterKey.id)).all()
    return dict(rows)


def register_key(engine: Engine, key_file: Path) -> tuple[int, bool]:
    """Give the key in key_file the next id (or find its id); True when it is new."""
    value = key_check_value(read_key_file(key_file))
    with Session(writer(engine)) as session, session.begin():
        known = session.scalar(select(MasterKey.id).where(MasterKey.check_value == value))
        if known is not None:
            return known, False
        if session.scalar(select(func.count()).select_from(MasterKey)) == 0:
            raise WrongMasterKey("the drive has no key yet: start a server first")
        if session.get_bind().dialect.name == "postgresql":  # ids taken in turn
            session.execute(select(MasterKey.id).with_for_update())
        key_id = session.scalar(select(func.max(MasterKey.id))) + 1
        session.add(MasterKey(id=key_id, check_value=value, created=time.time_ns()))
    return key_id, True
