"""Everyday tools on a real mount: safe-save, git, tar, cp -a, rsync -a, SQLite.

Each tool's result is compared with the same work done on a local directory (the oracle), and
the server must end up with the same bytes.
"""

import filecmp
import os
import shutil
import sqlite3
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.mount import MountProcess, module_drive, server_file, wait_until
from tests.support.server import ServerProcess

TOOL_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def tools_env(
    shared_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MountProcess, str, ServerProcess]]:
    with module_drive(shared_server, tmp_path_factory.mktemp("tools"), "tools") as env:
        yield env


@pytest.fixture
def d(tools_env: tuple, request: pytest.FixtureRequest) -> Path:
    folder = tools_env[0].path / request.node.name[:60]
    folder.mkdir()
    return folder


def run(*command: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, f"{command} failed: {result.stderr}"
    return result.stdout


def make_tree(root: Path) -> None:
    """A small project: nested folders, text and binary files, a symlink, odd modes."""
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("print('hi')\n" * 50)
    (root / "src" / "data.bin").write_bytes(os.urandom(700_000))
    (root / "README").write_text("readme\n")
    (root / "empty").write_bytes(b"")
    os.chmod(root / "README", 0o640)
    os.symlink("src/pkg/mod.py", root / "link")
    os.utime(root / "README", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))


def assert_same_tree(left: Path, right: Path) -> None:
    compare = filecmp.dircmp(left, right)
    assert not compare.left_only and not compare.right_only, (compare.left_only, compare.right_only)
    for name in compare.common_files:
        assert (left / name).read_bytes() == (right / name).read_bytes(), name
    for name in compare.common_dirs:
        assert_same_tree(left / name, right / name)


def test_safe_save_replaces_atomically(d: Path, tools_env: tuple) -> None:
    _drive, token, server = tools_env
    target = d / "doc.txt"
    target.write_text("version 1")
    for version in range(2, 5):
        temp = d / ".doc.txt.tmp"
        with open(temp, "w") as file:
            file.write(f"version {version}")
            file.flush()
            os.fsync(file.fileno())
        os.rename(temp, target)
        assert target.read_text() == f"version {version}"
    assert os.listdir(d) == ["doc.txt"]
    server_path = f"/{d.name}/doc.txt"
    wait_until(lambda: server_file(server, token, server_path) == b"version 4")
    assert server_file(server, token, f"/{d.name}/.doc.txt.tmp") is None


def test_git_init_add_commit_status(d: Path) -> None:
    env = ("-c", "user.name=T", "-c", "user.email=t@example.com")
    run("git", "init", "-q", cwd=d)
    make_tree(d / "work")
    run("git", *env, "add", ".", cwd=d)
    run("git", *env, "commit", "-q", "-m", "first", cwd=d)
    assert run("git", "status", "--porcelain", cwd=d) == ""
    (d / "work" / "README").write_text("changed\n")
    assert "work/README" in run("git", "status", "--porcelain", cwd=d)
    run("git", *env, "commit", "-qam", "second", cwd=d)
    assert run("git", "rev-list", "--count", "HEAD", cwd=d).strip() == "2"
    run("git", "fsck", "--no-progress", cwd=d)


def test_tar_extract_matches_local(d: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_tree(source)
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(source, arcname="tree")
    run("tar", "xf", str(archive), "-C", str(d))
    assert_same_tree(source, d / "tree")
    assert os.readlink(d / "tree" / "link") == "src/pkg/mod.py"


def test_cp_a_keeps_content_modes_and_times(d: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_tree(source)
    run("cp", "-a", str(source), str(d / "copy"))
    assert_same_tree(source, d / "copy")
    copied = (d / "copy" / "README").stat()
    assert copied.st_mode & 0o777 == 0o640
    assert copied.st_mtime_ns == 1_600_000_000_000_000_000
    run("cp", "-a", str(d / "copy"), str(d / "copy2"))  # within the mount
    assert_same_tree(source, d / "copy2")
    back = tmp_path / "back"
    run("cp", "-a", str(d / "copy"), str(back))  # and out again
    assert_same_tree(source, back)


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_rsync_a_then_incremental(d: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_tree(source)
    run("rsync", "-a", f"{source}/", f"{d / 'mirror'}/")
    assert_same_tree(source, d / "mirror")
    (source / "README").write_text("new readme\n")
    (source / "src" / "new.txt").write_text("new\n")
    run("rsync", "-a", "--delete", f"{source}/", f"{d / 'mirror'}/")
    assert_same_tree(source, d / "mirror")


def test_sqlite_database_on_the_mount(d: Path, tools_env: tuple) -> None:
    _drive, token, server = tools_env
    path = d / "app.db"
    # `with connection` only commits: each is closed too, or its open file keeps the mount
    # busy at unmount (the module's mount was then detached lazily and killed after 30 s).
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        db.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(2000)])
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE t SET v = 'changed' WHERE id % 10 = 0")
        db.execute("DELETE FROM t WHERE id > 1500")
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1500
        assert db.execute("SELECT COUNT(*) FROM t WHERE v = 'changed'").fetchone()[0] == 150
    finally:
        db.close()
    local = path.read_bytes()
    wait_until(lambda: server_file(server, token, f"/{d.name}/app.db") == local)
