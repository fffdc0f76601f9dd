"""The block service (verify, compress, encrypt, store) and the master key file."""

import os
import random
import stat
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zstandard

from backend.blocks import (
    FLAG_ZSTD,
    FORMAT_VERSION,
    BlockService,
    CorruptBlock,
    StoredBlock,
    _Threads,
)
from backend.blockstore.local import LocalBlockStore
from backend.blockstore.memory import MemoryBlockStore
from backend.blockstore.replicated import ReplicatedBlockStore
from backend.keys import KEY_SIZE, load_or_create_master_key
from backend.protocol.chunking import MAX_BLOCK_SIZE
from backend.protocol.errors import HashMismatch, InvalidRequest, NotFound, PayloadTooLarge
from backend.protocol.hashing import block_hash

KEY = bytes(range(32))
OVERHEAD = 1 + 2 + 12 + 16  # header byte, key id, nonce, GCM tag
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def text(size: int, seed: int = 1) -> bytes:
    """Compressible data: lines over a small vocabulary."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"block", b"cirrus", b"mount", b"sync"]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(words, k=12)) + b"\n"
    return bytes(out[:size])


def frame(data: bytes, **options: object) -> bytes:
    return zstandard.ZstdCompressor(level=3, **options).compress(data)


def plain_of(wire: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(wire)


@pytest.fixture
def store(tmp_path: Path) -> LocalBlockStore:
    return LocalBlockStore(tmp_path / "blocks")


@pytest.fixture
def service(store: LocalBlockStore) -> BlockService:
    return BlockService(store, KEY)


def object_path(store: LocalBlockStore, name: str) -> Path:
    return store.root / name[:2] / name[2:4] / name


# --- round trips -------------------------------------------------------------------------


def test_compressible_wire_block_is_stored_as_the_clients_frame(
    service: BlockService, store: LocalBlockStore
) -> None:
    data = text(600_000)
    wire = frame(data)
    stored = service.put_wire(block_hash(data), wire)
    assert stored == StoredBlock(block_hash(data), len(data), len(wire) + OVERHEAD)
    assert stored.stored_size < len(data) // 2
    obj = store.get(stored.hash)
    assert obj[0] == FORMAT_VERSION << 4 | FLAG_ZSTD
    assert data[:4096] not in obj
    assert service.get_plain(stored.hash) == data
    assert service.get_wire(stored.hash) == wire


def test_incompressible_wire_block_is_stored_raw(
    service: BlockService, store: LocalBlockStore
) -> None:
    data = os.urandom(300_000)
    stored = service.put_wire(block_hash(data), frame(data))
    assert stored.size == len(data)
    assert stored.stored_size == len(data) + OVERHEAD
    assert store.get(stored.hash)[0] == FORMAT_VERSION << 4
    assert service.get_plain(stored.hash) == data
    assert plain_of(service.get_wire(stored.hash)) == data


@pytest.mark.parametrize("kind", ["text", "random", "empty", "max"])
def test_put_plain_round_trips_through_both_reads(service: BlockService, kind: str) -> None:
    data = {
        "text": text(2 * 1024 * 1024),
        "random": os.urandom(700_000),
        "empty": b"",
        "max": os.urandom(MAX_BLOCK_SIZE),
    }[kind]
    stored = service.put_plain(data)
    assert stored.hash == block_hash(data)
    assert stored.size == len(data)
    assert service.get_plain(stored.hash) == data
    assert plain_of(service.get_wire(stored.hash)) == data
    if kind == "text":
        assert stored.stored_size < len(data) // 2
    else:
        assert stored.stored_size == len(data) + OVERHEAD


def test_a_resend_keeps_an_intact_object_untouched(
    service: BlockService, store: LocalBlockStore
) -> None:
    data = text(100_000)
    first = service.put_plain(data)
    path = object_path(store, first.hash)
    before = path.stat()
    again = service.put_wire_many([(first.hash, frame(data)), (first.hash, frame(data))])
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert again == [first, first]  # the size at rest is the object's, not the new frame's
    assert service.get_plain(first.hash) == data


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_resend_repairs_a_corrupt_or_lost_object_with_a_fresh_nonce(
    service: BlockService, store: LocalBlockStore, damage: str
) -> None:
    data = text(100_000)
    name = service.put_plain(data).hash
    path = object_path(store, name)
    good = path.read_bytes()
    if damage == "flip":
        path.write_bytes(good[:50] + bytes([good[50] ^ 1]) + good[51:])
    elif damage == "truncate":
        path.write_bytes(good[:10])
    else:
        path.unlink()
    stored = service.put_wire(name, frame(data))
    assert stored.stored_size == path.stat().st_size
    assert path.read_bytes()[1:13] != good[1:13]
    assert service.get_plain(name) == data


def test_a_resend_is_owed_to_every_replica_that_lacks_the_object(tmp_path: Path) -> None:
    near, far = LocalBlockStore(tmp_path / "near"), LocalBlockStore(tmp_path / "far")
    data = text(100_000)
    name = BlockService(near, KEY).put_plain(data).hash
    regions = ReplicatedBlockStore([near, far])
    both = BlockService(regions, KEY)
    assert not far.exists(name)
    # Not skipped as held (the far region lacks it): written where a write lands first, and
    # the far region's copy is owed, for the replication queue to bring there.
    assert both.put_wire(name, frame(data)).owed == (regions.names[1],)
    assert BlockService(near, KEY).get_plain(name) == data


def test_wire_frame_without_declared_size_is_accepted(service: BlockService) -> None:
    data = text(300_000)
    stored = service.put_wire(block_hash(data), frame(data, write_content_size=False))
    assert service.get_plain(stored.hash) == data


def test_concurrent_puts_and_gets_from_threads(service: BlockService) -> None:
    blocks = [text(200_000, seed) for seed in range(8)] + [os.urandom(200_000) for _ in range(8)]

    def round_trip(data: bytes) -> bool:
        name = service.put_wire(block_hash(data), frame(data)).hash
        return service.get_plain(name) == data and plain_of(service.get_wire(name)) == data

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(round_trip, blocks))


# --- bad input: refused, nothing stored --------------------------------------------------


def test_put_wire_many_stores_every_block_or_none(
    service: BlockService, store: LocalBlockStore
) -> None:
    blocks = [text(200_000, seed) for seed in range(4)] + [os.urandom(300_000)]
    stored = service.put_wire_many([(block_hash(data), frame(data)) for data in blocks])
    assert [(s.hash, s.size) for s in stored] == [(block_hash(d), len(d)) for d in blocks]
    assert [service.get_plain(block_hash(data)) for data in blocks] == blocks
    wires = service.get_wire_many([block_hash(data) for data in reversed(blocks)])
    assert [plain_of(wire) for wire in wires] == list(reversed(blocks))
    fresh = [text(1000, 7), text(1000, 8)]
    batch = [(block_hash(fresh[0]), frame(fresh[0])), (block_hash(fresh[0]), frame(fresh[1]))]
    with pytest.raises(HashMismatch):
        service.put_wire_many(batch)
    assert not service.exists(block_hash(fresh[0]))
    with pytest.raises(NotFound):
        service.get_wire_many([block_hash(blocks[0]), block_hash(fresh[1])])


def test_hash_mismatch_is_refused_and_nothing_stored(
    service: BlockService, store: LocalBlockStore
) -> None:
    claimed = block_hash(b"what the client said")
    with pytest.raises(HashMismatch):
        service.put_wire(claimed, frame(b"what the client sent"))
    assert list(store.keys()) == []
    with pytest.raises(NotFound):
        service.get_plain(claimed)


@pytest.mark.parametrize("bad", ["", "x", "AB" * 32, "ab" * 31, "../" * 22, "ab" * 32 + "\n"])
def test_bad_hash_syntax_is_invalid_request(
    service: BlockService, store: LocalBlockStore, bad: str
) -> None:
    with pytest.raises(InvalidRequest):
        service.put_wire(bad, frame(b"data"))
    with pytest.raises(InvalidRequest):
        service.get_plain(bad)
    with pytest.raises(InvalidRequest):
        service.get_wire(bad)
    assert list(store.keys()) == []


@pytest.mark.parametrize("declared", [True, False])
def test_oversized_frame_is_refused(
    service: BlockService, store: LocalBlockStore, declared: bool
) -> None:
    data = b"\0" * (MAX_BLOCK_SIZE + 1)
    wire = frame(data, write_content_size=declared)
    assert len(wire) < 4096  # a small request that would inflate past the cap
    with pytest.raises(PayloadTooLarge):
        service.put_wire(block_hash(data), wire)
    assert list(store.keys()) == []


def raw_frame(payload: bytes, declared: int) -> bytes:
    """A hand-built zstd frame: one raw block, an 8-byte content size that may lie."""
    header = ZSTD_MAGIC + bytes([0xE0]) + struct.pack("<Q", declared)  # single segment
    return header + struct.pack("<I", len(payload) << 3 | 1)[:3] + payload  # last raw block


def test_hand_built_frame_is_understood(service: BlockService) -> None:
    stored = service.put_wire(block_hash(b"y" * 10), raw_frame(b"y" * 10, 10))
    assert service.get_plain(stored.hash) == b"y" * 10


def test_frame_declaring_a_huge_size_is_refused_without_inflating(service: BlockService) -> None:
    with pytest.raises(PayloadTooLarge):
        service.put_wire(block_hash(b"y" * 10), raw_frame(b"y" * 10, 2**40))


def test_frame_whose_declared_size_lies_is_invalid(service: BlockService) -> None:
    with pytest.raises(InvalidRequest):
        service.put_wire(block_hash(b"y" * 10), raw_frame(b"y" * 10, 11))


def test_put_plain_refuses_an_oversized_block(
    service: BlockService, store: LocalBlockStore
) -> None:
    with pytest.raises(PayloadTooLarge):
        service.put_plain(b"\0" * (MAX_BLOCK_SIZE + 1))
    assert list(store.keys()) == []


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"not zstd at all",
        frame(b"hello world" * 100)[:-5],  # truncated
        frame(b"hello world" * 100) + b"trailing",
        frame(b"hello") + frame(b" world"),  # two frames
    ],
    ids=["empty", "garbage", "truncated", "trailing", "two-frames"],
)
def test_garbage_frame_is_invalid_request(
    service: BlockService, store: LocalBlockStore, wire: bytes
) -> None:
    with pytest.raises(InvalidRequest):
        service.put_wire(block_hash(b"hello world" * 100), wire)
    assert list(store.keys()) == []


# --- stored objects that are not what they should be ---------------------------------------


def test_missing_block_is_not_found(service: BlockService) -> None:
    with pytest.raises(NotFound):
        service.get_plain(block_hash(b"never stored"))
    with pytest.raises(NotFound):
        service.get_wire(block_hash(b"never stored"))


@pytest.mark.parametrize("where", [0, 1, 20, -1])
@pytest.mark.parametrize("compressible", [True, False])
def test_tampered_object_is_detected(
    service: BlockService, store: LocalBlockStore, where: int, compressible: bool
) -> None:
    data = text(200_000) if compressible else os.urandom(200_000)
    name = service.put_plain(data).hash
    path = object_path(store, name)
    obj = bytearray(path.read_bytes())
    obj[where] ^= 0x01
    path.write_bytes(bytes(obj))
    with pytest.raises(CorruptBlock):
        service.get_plain(name)
    with pytest.raises(CorruptBlock):
        service.get_wire(name)


@pytest.mark.parametrize("obj", [b"", b"\x10", b"\x10" + b"\0" * 20, b"\x30" + b"\0" * 100])
def test_truncated_or_unknown_format_object_is_corrupt(
    service: BlockService, store: LocalBlockStore, obj: bytes
) -> None:
    name = block_hash(b"some block")
    store.put(name, obj)
    with pytest.raises(CorruptBlock, match=r"truncated or of an unknown format|authentication"):
        service.get_plain(name)


def test_object_moved_under_another_name_is_detected(
    service: BlockService, store: LocalBlockStore
) -> None:
    name = service.put_plain(b"the real block").hash
    other = block_hash(b"another block")
    store.put(other, store.get(name))
    with pytest.raises(CorruptBlock):
        service.get_plain(other)


def test_wrong_master_key_is_detected(store: LocalBlockStore) -> None:
    name = BlockService(store, KEY).put_plain(text(50_000)).hash
    with pytest.raises(CorruptBlock, match="another master key"):
        BlockService(store, os.urandom(32)).get_plain(name)


def test_corrupt_block_reports_as_hash_mismatch() -> None:
    error = CorruptBlock("x")
    assert isinstance(error, HashMismatch)
    assert (error.status, error.to_json()["error"]["code"]) == (422, "hash_mismatch")


def test_service_refuses_a_master_key_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        BlockService(MemoryBlockStore(), b"short")


# --- master key file ---------------------------------------------------------------------


def test_master_key_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "master.key"
    key = load_or_create_master_key(path)
    assert len(key) == KEY_SIZE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_master_key(path) == key
    assert sorted(p.name for p in path.parent.iterdir()) == ["master.key"]
    other = load_or_create_master_key(tmp_path / "other.key")
    assert other != key


def test_blocks_written_under_a_key_file_read_back_after_reopen(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "blocks")
    name = BlockService(store, load_or_create_master_key(tmp_path / "k")).put_plain(b"kept").hash
    reopened = BlockService(
        LocalBlockStore(tmp_path / "blocks"), load_or_create_master_key(tmp_path / "k")
    )
    assert reopened.get_plain(name) == b"kept"


@pytest.mark.parametrize("content", [b"", b"short", os.urandom(33)])
def test_master_key_file_of_wrong_length_is_refused_and_kept(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"holds {len(content)} bytes"):
        load_or_create_master_key(path)
    assert path.read_bytes() == content


def test_a_batch_is_worked_in_one_share_per_thread_and_keeps_its_order() -> None:
    """Each thread takes a contiguous share of the items (one hand-over per thread, not
    per item); results come back in item order, and the first failure in item order is
    raised only once every item has run."""
    threads = _Threads(3, "test-shares")
    assert threads.each(lambda item: item * 10, list(range(10))) == [i * 10 for i in range(10)]
    ran: list[tuple[int, str]] = []
    first_of_each_share = threading.Barrier(3, timeout=10)

    def work(item: int) -> int:
        if item in (0, 4, 8):
            first_of_each_share.wait()  # three threads at once, each at a share's start
        ran.append((item, threading.current_thread().name))
        if item in (5, 9):
            raise ValueError(f"item {item}")
        return item * 10

    with pytest.raises(ValueError, match="item 5"):
        threads.each(work, list(range(10)))
    assert sorted(item for item, _name in ran) == list(range(10))
    by_thread: dict[str, list[int]] = {}
    for item, name in ran:
        by_thread.setdefault(name, []).append(item)
    assert sorted(by_thread.values()) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
