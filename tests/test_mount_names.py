"""Names through a real mount: the server keeps them in NFC (docs/api.md), and the mount
treats the NFC and NFD spellings of a name as one file before and after the sync."""

import errno
import os
import unicodedata

import pytest

from tests.support import mount as mount_fixtures
from tests.support.mount import MountProcess, server_file, wait_until
from tests.support.server import ServerProcess

mount_factory = mount_fixtures.mount_factory
drive = mount_fixtures.drive
drive_user = mount_fixtures.drive_user

NFC = unicodedata.normalize("NFC", "café.txt")
NFD = unicodedata.normalize("NFD", "café.txt")


def server_names(server: ServerProcess, token: str) -> list[str]:
    with server.client(token) as client:
        answer = client.get("/v1/tree/list", params={"path": "/"}).raise_for_status()
    return sorted(entry["name"] for entry in answer.json()["entries"])


def test_a_name_created_in_nfd_is_stored_in_nfc_and_stays_reachable(
    server: ServerProcess, drive_user: str, drive: MountProcess
) -> None:
    assert NFC != NFD
    (drive.path / NFD).write_bytes(b"decomposed")
    wait_until(lambda: server_file(server, drive_user, "/" + NFC) == b"decomposed", timeout=20)
    assert server_names(server, drive_user) == [NFC]
    wait_until(lambda: os.listdir(drive.path) == [NFC])  # the mount shows the server's name
    assert (drive.path / NFD).read_bytes() == b"decomposed"  # the creator's spelling still works
    assert (drive.path / NFC).read_bytes() == b"decomposed"


def test_nfc_and_nfd_spellings_are_one_file_on_the_mount(
    server: ServerProcess, drive_user: str, drive: MountProcess
) -> None:
    (drive.path / NFD).write_bytes(b"one")
    (drive.path / NFC).write_bytes(b"two")  # before any sync: the same file, rewritten
    assert os.listdir(drive.path) == [NFC]
    assert (drive.path / NFD).read_bytes() == b"two"
    with pytest.raises(OSError) as caught:
        os.mkdir(drive.path / NFD)
    assert caught.value.errno == errno.EEXIST
    os.rename(drive.path / NFD, drive.path / "plain.txt")
    wait_until(lambda: server_names(server, drive_user) == ["plain.txt"], timeout=20)
    assert server_file(server, drive_user, "/plain.txt") == b"two"
