"""The server's master key: 32 random bytes that encrypt every block at rest (AES-256-GCM).

The key lives in a file readable by the server's user only. It is created once, atomically,
so two servers starting together can never end up with different keys; a file of the wrong
length is refused rather than replaced, because a new key would make every stored block
unreadable.
"""

import secrets
from pathlib import Path

from backend.blockstore.local import write_durably

KEY_SIZE = 32


def load_or_create_master_key(path: Path) -> bytes:
    """Return the key stored at path, creating it (mode 0600) when the file does not exist."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # A concurrent creator may win the race; then its key is the one read below.
        write_durably(path, secrets.token_bytes(KEY_SIZE), mode=0o600, replace=False)
    key = path.read_bytes()
    if len(key) != KEY_SIZE:
        raise ValueError(
            f"master key file {path} holds {len(key)} bytes, expected {KEY_SIZE}; "
            "restore the original key file (a new key cannot read existing blocks)"
        )
    return key
