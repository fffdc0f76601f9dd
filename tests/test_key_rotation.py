"""Rotating the master key: blocks name the key that sealed them, servers read with older
keys, and `cirrus admin rotate-key` re-seals old blocks while a server keeps serving."""

import os
import secrets
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backend.blocks import BlockService, CorruptBlock, _derive_block_key
from backend.blockstore.memory import MemoryBlockStore
from backend.protocol.hashing import block_hash
from tests.support.server import ServerProcess, cirrus_executable

OLD, NEW = os.urandom(32), os.urandom(32)


def key_id_of(store: MemoryBlockStore, name: str) -> int:
    return int.from_bytes(store.get(name)[1:3], "big")


def test_new_blocks_use_the_new_key_and_old_ones_stay_readable() -> None:
    store = MemoryBlockStore()
    before = BlockService(store, OLD).put_plain(b"sealed with the old key" * 100).hash
    rotated = BlockService(store, NEW, key_id=2, read_keys={1: OLD})
    after = rotated.put_plain(b"sealed with the new key" * 100).hash
    assert (key_id_of(store, before), key_id_of(store, after)) == (1, 2)
    assert rotated.get_plain(before) == b"sealed with the old key" * 100
    with pytest.raises(CorruptBlock, match="master key 2, which this server does not hold"):
        BlockService(store, OLD).get_plain(after)


def test_reseal_moves_a_block_to_the_current_key_once() -> None:
    store = MemoryBlockStore()
    name = BlockService(store, OLD).put_plain(b"x" * 5000).hash
    rotated = BlockService(store, NEW, key_id=2, read_keys={1: OLD})
    assert rotated.reseal(name) is True
    assert rotated.reseal(name) is False  # already under key 2
    assert key_id_of(store, name) == 2
    assert BlockService(store, NEW, key_id=2).get_plain(name) == b"x" * 5000


def test_a_version_1_object_is_read_as_sealed_with_key_1() -> None:
    """Objects written before key ids existed: header, nonce, ciphertext; key 1."""
    store = MemoryBlockStore()
    plain = b"written by an older server"
    name = block_hash(plain)
    header, nonce = bytes([0x10]), os.urandom(12)
    sealed = AESGCM(_derive_block_key(OLD)).encrypt(nonce, plain, header + name.encode())
    store.put(name, header + nonce + sealed)
    rotated = BlockService(store, NEW, key_id=2, read_keys={1: OLD})
    assert rotated.get_plain(name) == plain
    assert rotated.reseal(name) is True and key_id_of(store, name) == 2
    assert rotated.get_plain(name) == plain


def cirrus(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([cirrus_executable(), *args], capture_output=True, text=True, timeout=120)


def test_rotation_while_a_server_serves(tmp_path: Path) -> None:
    old, new, stranger = (tmp_path / name for name in ("old.key", "new.key", "other.key"))
    for path in (old, new, stranger):
        path.write_text(secrets.token_hex(32))
    data = tmp_path / "data"
    files = {f"/f{i}": os.urandom(40_000 + i) for i in range(6)}
    server = ServerProcess(data, extra_args=("--key-file", str(old)))
    try:
        server.start()
        token = server.create_user("alice")

        def upload(names: list[str]) -> None:
            with server.client(token) as client:
                for path in names:
                    params = {"uploadType": "media", "path": path}
                    assert client.post("/v1/files", params=params, content=files[path]).is_success

        def all_readable() -> bool:
            with server.client(token) as client:
                return all(
                    client.get("/v1/files/content", params={"path": p}).content == body
                    for p, body in files.items()
                )

        upload(["/f0", "/f1", "/f2"])
        added = cirrus("admin", "add-key", str(new), "--data", str(data))
        assert added.stdout.strip() == "registered as master key 2", added.stderr
        server.stop()
        server.extra_args = ("--key-file", str(new), "--read-key-file", str(old))
        server.start()
        upload(["/f3", "/f4", "/f5"])  # sealed with the new key
        assert all_readable()
        keys = ("--key-file", str(new))
        refused = cirrus("admin", "rotate-key", "--data", str(data), *keys)
        assert refused.returncode == 1 and "could not be re-sealed" in refused.stderr
        rotated = cirrus("admin", "rotate-key", "--data", str(data), *keys,
                         "--read-key-file", str(old))  # fmt: skip
        assert rotated.returncode == 0, rotated.stderr
        assert rotated.stdout.strip().splitlines()[-1].startswith("re-sealed 3 of ")
        server.stop()
        server.extra_args = ("--key-file", str(new))  # the old key is no longer needed
        server.start()
        assert all_readable()
    finally:
        server.stop()
    assert server.errors_logged() == []
    unknown = cirrus("serve", "--data", str(data), "--port", "0", "--key-file", str(stranger))
    assert unknown.returncode == 1 and "differs" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
