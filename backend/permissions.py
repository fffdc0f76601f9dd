"""Keeping the data directory private: what a server creates there is 0600 (files) and 0700
(folders) whatever the umask it was started with, and whatever the mode of a data directory
that existed before.

The metadata database names every file and holds the token hashes, and SQLite creates its
-wal and -shm files with the database's mode: with a umask of 022 they were all 0644. The
process's umask becomes 077 before anything is opened, the places the server made before
are tightened, and a data directory others may enter is reported (its contents are private
either way; its mode is the operator's choice).
"""

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
# What the server keeps directly under the data directory.
_FILES = ("metadata.db", "metadata.db-wal", "metadata.db-shm", "master.key")
_FOLDERS = ("blocks", "uploads")


def make_private(data_dir: Path) -> None:
    """Set the umask to 077 and tighten what an earlier server left under data_dir."""
    os.umask(PRIVATE_UMASK)
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "data directory %s is open to other users (mode %o); its contents are kept "
            "private, but chmod 700 it to hide even their names",
            data_dir,
            mode,
        )
    for name in _FILES:
        _tighten(data_dir / name, 0o600)
    for name in _FOLDERS:  # their contents are not walked: a block store holds millions
        _tighten(data_dir / name, 0o700)


def _tighten(path: Path, mode: int) -> None:
    """chmod a regular file or folder (never through a symlink) to mode."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    kind_ok = stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)
    if kind_ok and stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)
