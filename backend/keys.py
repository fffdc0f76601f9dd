"""The server's master key: 32 random bytes that encrypt every block at rest (AES-256-GCM).

Every server of one drive needs the same key. It comes from, in this order:
- the file named by `key_file` (`--key-file`), which must exist: 32 raw bytes, or 64 hex
  digits (`openssl rand -hex 32`), readable by the server's user only;
- the environment variable CIRRUS_MASTER_KEY, 64 hex digits (from a secret store);
- DATA/master.key, created once, atomically, at the first start of a single server, so two
  servers starting together can never end up with different keys.
A key of the wrong length is refused rather than replaced, because a new key would make every
stored block unreadable. The database keeps a check value of each key (backend/keycheck.py),
so a server given another key than its peers refuses to start. Older keys a server still
reads during a rotation come from files (`read_key_files`).
"""

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from backend.blockstore.local import write_durably

KEY_SIZE = 32
KEY_ENV = "CIRRUS_MASTER_KEY"
_CHECK_INFO = b"cirrus key check v1"


def load_master_key(key_file: Path | None, default_path: Path) -> bytes:
    """The key from key_file, else from $CIRRUS_MASTER_KEY, else from (or into) default_path."""
    from_env = os.environ.get(KEY_ENV)
    if key_file is not None:
        if from_env:
            raise ValueError(f"both a key file and ${KEY_ENV} are set; give the key once")
        return read_key_file(key_file)
    if from_env:
        return _parse(from_env.encode(), f"${KEY_ENV}")
    return load_or_create_master_key(default_path)


def read_key_file(path: Path) -> bytes:
    """A key from a file that must exist (keys shared by servers are never invented)."""
    if not Path(path).is_file():
        raise ValueError(
            f"master key file {path} does not exist; copy the key every server of the "
            "drive shares there (a new one: openssl rand -hex 32)"
        )
    return _parse(Path(path).read_bytes(), f"master key file {path}")


def load_or_create_master_key(path: Path) -> bytes:
    """Return the key stored at path, creating it (mode 0600) when the file does not exist."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # A concurrent creator may win the race; then its key is the one read below.
        write_durably(path, secrets.token_bytes(KEY_SIZE), mode=0o600, replace=False)
    return _parse(path.read_bytes(), f"master key file {path}")


def _parse(raw: bytes, source: str) -> bytes:
    """32 raw bytes, or 64 hex digits around which blanks (a final newline) are ignored."""
    if len(raw) == KEY_SIZE:
        return raw
    text = raw.strip()
    if len(text) == 2 * KEY_SIZE:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise ValueError(
        f"{source} holds {len(raw)} bytes, expected {KEY_SIZE} raw bytes or "
        f"{2 * KEY_SIZE} hex digits; restore the original key (a new key cannot read "
        "existing blocks)"
    )


def key_check_value(key: bytes) -> str:
    """A value that tells keys apart without revealing them: HKDF of the key for its own
    purpose, so it shares nothing with the key that seals blocks."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CHECK_INFO)
    return derived.derive(key).hex()
