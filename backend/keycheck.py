"""The master key's check value in the database: servers of one drive must share one key.

A server given another key than its peers would seal new blocks that they cannot open and
fail to open theirs. The first server to start records its key's check value (key id 1);
every later start compares its own and refuses to run on a mismatch.
"""

import time

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from backend.db import writer
from backend.db.engine import insert_ignore
from backend.db.models import MasterKey
from backend.keys import key_check_value

FIRST_KEY_ID = 1


class WrongMasterKey(ValueError):
    """The key differs from the one the database's blocks are sealed with."""


def check_master_key(engine: Engine, key: bytes) -> None:
    """Record the key's check value if none is recorded yet; raise WrongMasterKey if another is."""
    value = key_check_value(key)
    row = {"id": FIRST_KEY_ID, "check_value": value, "created": time.time_ns()}
    with Session(writer(engine)) as session, session.begin():
        insert_ignore(session, MasterKey, [row])
        stored = session.scalar(select(MasterKey.check_value).where(MasterKey.id == FIRST_KEY_ID))
    if stored != value:
        raise WrongMasterKey(
            "the master key differs from the one this drive's blocks are sealed with "
            f"(check value {value[:8]}…, recorded {stored[:8]}…); give this server its "
            "peers' key (key_file or $CIRRUS_MASTER_KEY)"
        )
