"""Everything a server creates under --data is private (0600 files, 0700 folders), whatever
the umask it starts with and the mode of a data directory that existed before; an open data
directory is reported."""

import os
import stat
from pathlib import Path

from tests.support.server import ServerProcess


def test_the_data_directory_holds_only_private_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    previous = os.umask(0o022)
    server = ServerProcess(data)
    try:
        server.start()
        with server.client(server.create_user("alice")) as client:
            upload = {"uploadType": "media", "path": "/f"}
            assert client.post("/v1/files", params=upload, content=b"x" * 1000).status_code == 201
            started = client.post(
                "/v1/files",
                params={"uploadType": "resumable", "path": "/r"},
                headers={"X-Upload-Content-Length": "10"},
            )
            assert started.status_code == 200
            modes = _modes(data)
    finally:
        os.umask(previous)
        server.stop()
    assert {"metadata.db", "metadata.db-wal", "metadata.db-shm", "master.key"} <= set(modes)
    loose = {path: oct(mode) for path, mode in modes.items() if mode not in (0o600, 0o700)}
    assert loose == {}
    assert "is open to other users" in server.log_path.read_text()


def _modes(root: Path) -> dict[str, int]:
    """The permission bits of everything under root, by relative path."""
    modes = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder) / name
            modes[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return modes
