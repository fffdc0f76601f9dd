"""`cirrus share add|list|remove` against a real server and mount, and their one-line errors."""

from pathlib import Path

from tests.support import mount as mount_fixtures
from tests.support.mount import MountProcess, server_file, server_stat, wait_until
from tests.support.server import ServerProcess
from tests.test_user_cli import cli, fails, home, ok_json

mount_factory = mount_fixtures.mount_factory
drive = mount_fixtures.drive
drive_user = mount_fixtures.drive_user
home = home  # the fixture, for this module's tests


def test_share_add_list_remove(
    server: ServerProcess, drive: MountProcess, drive_user: str, home: dict, tmp_path: Path
) -> None:
    bob = server.create_user("bob")
    bob_file = tmp_path / "bob.token"
    bob_file.write_text(bob)
    as_bob = ("--server", server.url, "--token-file", str(bob_file))
    (drive.path / "proj").mkdir()
    (drive.path / "proj" / "a.txt").write_bytes(b"a")
    wait_until(lambda: server_file(server, drive_user, "/proj/a.txt") == b"a")

    made = cli(home, "share", "add", "proj", "bob", "--read", cwd=drive.path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "shared /proj with bob (read)"
    listed = ok_json(home, "share", "list", cwd=drive.path)
    assert [(s["path"], s["user"], s["access"]) for s in listed["shared"]] == [
        ("/proj", "bob", "read")
    ]
    received = ok_json(home, "share", "list", *as_bob)["received"]
    assert [(s["path"], s["owner"]) for s in received] == [("/proj", "alice")]
    assert server_file(server, bob, "/proj/a.txt") == b"a"
    human = cli(home, "share", "list", *as_bob)
    assert "from alice" in human.stdout and "/proj" in human.stdout

    fails(cli(home, "share", "add", "/proj/a.txt", "alice", "--read", *as_bob), "share add",
          "shared with you read-only")  # fmt: skip
    removed = ok_json(home, "share", "remove", str(drive.path / "proj"), "bob", cwd=drive.path)
    assert removed["removed"] == [listed["shared"][0]["id"]]
    assert server_stat(server, bob, "/proj") is None
    assert ok_json(home, "share", "list", *as_bob)["received"] == []


def test_share_errors_are_one_line(
    server: ServerProcess, drive: MountProcess, drive_user: str, home: dict
) -> None:
    (drive.path / "docs").mkdir()
    wait_until(lambda: server_stat(server, drive_user, "/docs"))
    fails(cli(home, "share", "add", "docs", "nobody", "--write", cwd=drive.path), "share add",
          "no such user: nobody")  # fmt: skip
    fails(cli(home, "share", "add", "docs", "alice", "--write", cwd=drive.path), "share add",
          "cannot be shared with its own owner")  # fmt: skip
    server.create_user("carol")
    fails(cli(home, "share", "add", "nope", "carol", "--write", cwd=drive.path), "share add",
          "no such file or folder")  # fmt: skip
    fails(cli(home, "share", "remove", "docs", cwd=drive.path), "share remove", "not shared")
    usage = cli(home, "share", "add", "docs", "bob", cwd=drive.path)
    assert usage.returncode == 2 and "--read" in usage.stderr
    assert cli(home, "share", "--help").returncode == 0


def test_share_link_add_list_remove(
    server: ServerProcess, drive: MountProcess, drive_user: str, home: dict
) -> None:
    (drive.path / "pub.txt").write_bytes(b"for everyone")
    wait_until(lambda: server_file(server, drive_user, "/pub.txt") == b"for everyone")
    made = cli(home, "share", "link", "add", "pub.txt", "--expires", "2h", cwd=drive.path)
    assert made.returncode == 0, made.stderr
    url = made.stdout.splitlines()[0]
    assert url.startswith(f"{server.url}/v1/public/")
    with server.client() as anyone:
        assert anyone.get(url).content == b"for everyone"
    listed = ok_json(home, "share", "link", "list", cwd=drive.path)["links"]
    assert [entry["path"] for entry in listed] == ["/pub.txt"]
    removed = cli(home, "share", "link", "remove", str(listed[0]["id"]), cwd=drive.path)
    assert removed.returncode == 0 and removed.stdout.strip() == f"removed link {listed[0]['id']}"
    with server.client() as anyone:
        assert anyone.get(url).status_code == 404
    fails(cli(home, "share", "link", "add", "pub.txt", "--expires", "soon", cwd=drive.path),
          "share link add", "not a lifetime")  # fmt: skip
    fails(cli(home, "share", "link", "remove", "999", cwd=drive.path), "share link remove",
          "no such link")  # fmt: skip
