"""Block stores: one contract suite run against every implementation, then what each adds."""

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backend.blockstore import local as local_module
from backend.blockstore.base import BlockNotFound, BlockStore
from backend.blockstore.local import LocalBlockStore
from backend.blockstore.memory import MemoryBlockStore
from backend.blockstore.registry import SCHEMES, open_store, register_scheme
from backend.blockstore.replicated import ReplicatedBlockStore
from backend.blockstore.tiered import TieredBlockStore
from backend.protocol.errors import BlockRestoring, InvalidRequest
from backend.protocol.hashing import block_hash
from tests.support.s3 import MotoServer

StoreFactory = Callable[[Path], BlockStore]

FACTORIES: dict[str, StoreFactory] = {
    "local": lambda root: LocalBlockStore(root / "blocks"),
    "memory": lambda root: MemoryBlockStore(),
    "replicated": lambda root: ReplicatedBlockStore(
        [LocalBlockStore(root / "a"), MemoryBlockStore(), LocalBlockStore(root / "b")]
    ),
    "registry-file": lambda root: open_store(f"file://{root}/blocks"),
    "registry-replicated": lambda root: open_store(f"replicated:{root}/a|memory://"),
}
# Stores on the session's moto S3 server: built from the URL of a fresh bucket.
S3_FACTORIES: dict[str, Callable[[str], BlockStore]] = {
    "s3": open_store,
    "replicated-s3-local": lambda url: ReplicatedBlockStore([open_store(url), MemoryBlockStore()]),
}


def key(seed: int) -> str:
    return block_hash(seed.to_bytes(4, "big"))


def stray_files(root: Path) -> list[Path]:
    """Temp files (dot-files) anywhere under root: a finished write must leave none."""
    return [path for path in root.rglob(".*") if path.is_file()]


@pytest.fixture(params=[*FACTORIES, *S3_FACTORIES])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlockStore]:
    if request.param in S3_FACTORIES:
        moto = request.getfixturevalue("moto")
        url = moto.store_url(request.getfixturevalue("s3_bucket"), "blocks")
        yield S3_FACTORIES[request.param](url)
        return
    yield FACTORIES[request.param](tmp_path)
    assert stray_files(tmp_path) == []


def test_put_get_exists_delete(store: BlockStore) -> None:
    k = key(1)
    assert not store.exists(k)
    store.put(k, b"payload")
    assert store.exists(k)
    assert store.get(k) == b"payload"
    store.delete(k)
    assert not store.exists(k)
    with pytest.raises(BlockNotFound):
        store.get(k)


def test_missing_key_raises_block_not_found(store: BlockStore) -> None:
    with pytest.raises(BlockNotFound):
        store.get(key(2))


def test_put_is_idempotent_and_overwrite_replaces(store: BlockStore) -> None:
    k = key(3)
    store.put(k, b"first")
    store.put(k, b"first")
    assert store.get(k) == b"first"
    store.put(k, b"second version")
    assert store.get(k) == b"second version"
    assert list(store.keys()) == [k]


def test_delete_many_removes_each_and_skips_absent_keys(store: BlockStore) -> None:
    store.put_many([(key(i), bytes([i])) for i in range(10, 16)])
    store.delete_many([key(i) for i in (10, 11, 12, 99)])
    assert sorted(store.keys()) == sorted(key(i) for i in (13, 14, 15))
    with pytest.raises(InvalidRequest):
        store.delete_many([key(13), "not-a-hash"])


def test_delete_of_absent_key_is_not_an_error(store: BlockStore) -> None:
    store.delete(key(4))
    store.put(key(5), b"x")
    store.delete(key(5))
    store.delete(key(5))
    assert list(store.keys()) == []


def test_keys_lists_exactly_what_was_put(store: BlockStore) -> None:
    expected = {key(i) for i in range(20)}
    for i, k in enumerate(sorted(expected)):
        store.put(k, bytes([i]) * i)
    store.delete(key(7))
    expected.discard(key(7))
    assert set(store.keys()) == expected
    assert len(list(store.keys())) == len(expected)


def test_held_names_the_objects_the_check_accepts_with_their_sizes(store: BlockStore) -> None:
    store.put_many([(key(40), b"good"), (key(41), b"bad!!")])
    held = store.held([key(40), key(41), key(42)], lambda name, data: data == b"good")
    assert held == {key(40): 4}


def test_objects_read_at_once_need_no_preparing(store: BlockStore) -> None:
    store.put(key(45), b"hot")
    store.prepare_reads([key(45), key(46)])  # an absent key is the read's to report
    assert store.get(key(45)) == b"hot"


def test_a_glacier_store_restores_every_object_asked_for_at_once(
    moto: MotoServer, s3_bucket: str
) -> None:
    cold = open_store(moto.store_url(s3_bucket, "cold", storage_class="GLACIER"))
    tiered = TieredBlockStore(MemoryBlockStore(), cold)
    tiered.hot.put(key(47), b"hot copy")
    cold.put_many([(key(48), b"one"), (key(49), b"two")])
    with pytest.raises(BlockRestoring, match="2 archived blocks") as restoring:
        tiered.prepare_reads([key(47), key(48), key(49)])
    assert restoring.value.retry_after > 0
    tiered.prepare_reads([key(47), key(48), key(49)])  # moto restores at once
    assert [tiered.get(key(n)) for n in (47, 48, 49)] == [b"hot copy", b"one", b"two"]


def test_empty_and_large_objects_round_trip(store: BlockStore) -> None:
    large = os.urandom(3 * 1024 * 1024)
    store.put(key(6), b"")
    store.put(key(7), large)
    assert store.get(key(6)) == b""
    assert store.get(key(7)) == large


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "AB" * 32, "ab" * 31, "", "ab" * 32 + "/x", "zz" * 32]
)
def test_a_key_that_is_not_a_hash_is_refused(store: BlockStore, bad: str) -> None:
    for call in (lambda: store.put(bad, b"x"), lambda: store.get(bad), lambda: store.delete(bad)):
        with pytest.raises(InvalidRequest):
            call()
    with pytest.raises(InvalidRequest):
        store.exists(bad)
    assert list(store.keys()) == []


def test_concurrent_writers_of_one_key_leave_one_whole_object(store: BlockStore) -> None:
    k = key(8)
    values = [bytes([i]) * 200_000 for i in range(4)]
    threads = [threading.Thread(target=store.put, args=(k, value)) for value in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert store.get(k) in values


# --- local directory ---------------------------------------------------------------------


def test_local_store_fans_out_and_survives_reopen(tmp_path: Path) -> None:
    k = key(10)
    LocalBlockStore(tmp_path).put(k, b"durable")
    assert (tmp_path / k[:2] / k[2:4] / k).read_bytes() == b"durable"
    reopened = LocalBlockStore(tmp_path)
    assert reopened.get(k) == b"durable"
    assert list(reopened.keys()) == [k]


def test_local_store_keys_ignore_stray_temp_files_and_foreign_entries(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path)
    k = key(11)
    store.put(k, b"x")
    (tmp_path / k[:2] / k[2:4] / f".{k}.0123abcd.tmp").write_bytes(b"torn")
    (tmp_path / "README").write_text("not a block")
    (tmp_path / "lost+found").mkdir()
    assert list(store.keys()) == [k]


# --- replicated --------------------------------------------------------------------------


def broken_local_store(root: Path) -> LocalBlockStore:
    """A local store whose directory has been replaced by a file: every call fails with OSError."""
    store = LocalBlockStore(root)
    root.rmdir()
    root.write_bytes(b"not a directory")
    return store


def test_replicated_put_reaches_every_replica(tmp_path: Path) -> None:
    replicas = [LocalBlockStore(tmp_path / "a"), LocalBlockStore(tmp_path / "b")]
    ReplicatedBlockStore(replicas).put(key(20), b"both")
    assert [replica.get(key(20)) for replica in replicas] == [b"both", b"both"]


def test_replicated_put_fails_when_a_replica_fails(tmp_path: Path) -> None:
    store = ReplicatedBlockStore([MemoryBlockStore(), broken_local_store(tmp_path / "b")])
    with pytest.raises(OSError):
        store.put(key(21), b"x")


def test_replicated_get_repairs_replicas_that_lack_the_object(tmp_path: Path) -> None:
    near, far = LocalBlockStore(tmp_path / "near"), LocalBlockStore(tmp_path / "far")
    far.put(key(22), b"only far")
    store = ReplicatedBlockStore([near, far])
    assert store.get(key(22)) == b"only far"
    assert near.get(key(22)) == b"only far"


def test_replicated_held_is_only_what_every_replica_holds(tmp_path: Path) -> None:
    near, far = LocalBlockStore(tmp_path / "near"), MemoryBlockStore()
    near.put_many([(key(43), b"both"), (key(44), b"near only")])
    far.put(key(43), b"both")
    held = ReplicatedBlockStore([near, far]).held([key(43), key(44)], lambda _k, _d: True)
    assert held == {key(43): 4}


def test_replicated_get_reads_around_a_failed_replica(tmp_path: Path) -> None:
    healthy = MemoryBlockStore()
    healthy.put(key(23), b"still here")
    store = ReplicatedBlockStore([broken_local_store(tmp_path / "down"), healthy])
    assert store.get(key(23)) == b"still here"


def test_replicated_get_reports_the_failure_rather_than_not_found(tmp_path: Path) -> None:
    store = ReplicatedBlockStore([MemoryBlockStore(), broken_local_store(tmp_path / "down")])
    with pytest.raises(OSError):
        store.get(key(24))


def test_replicated_delete_removes_from_every_replica() -> None:
    replicas = [MemoryBlockStore(), MemoryBlockStore()]
    replicas[1].put(key(25), b"x")
    store = ReplicatedBlockStore(replicas)
    store.put(key(26), b"y")
    store.delete(key(25))
    store.delete(key(26))
    assert [list(replica.keys()) for replica in replicas] == [[], []]


def test_replicated_keys_are_the_union_without_duplicates() -> None:
    a, b = MemoryBlockStore(), MemoryBlockStore()
    a.put(key(27), b"1")
    b.put(key(28), b"2")
    ReplicatedBlockStore([a, b]).put(key(29), b"3")
    assert sorted(ReplicatedBlockStore([a, b]).keys()) == sorted([key(27), key(28), key(29)])


# --- registry ----------------------------------------------------------------------------


def test_registry_opens_local_from_url_or_plain_path(tmp_path: Path) -> None:
    open_store(f"file://{tmp_path}/x").put(key(30), b"url")
    assert open_store(str(tmp_path / "x")).get(key(30)) == b"url"
    assert open_store(f"file://localhost{tmp_path}/x").get(key(30)) == b"url"
    assert isinstance(open_store("memory://"), MemoryBlockStore)


def test_registry_builds_replicated_stores_in_order(tmp_path: Path) -> None:
    store = open_store(f"replicated:file://{tmp_path}/a|{tmp_path}/b|memory://")
    assert isinstance(store, ReplicatedBlockStore)
    kinds = [type(replica) for replica in store.stores]
    assert kinds == [LocalBlockStore, LocalBlockStore, MemoryBlockStore]
    assert store.stores[1].root == tmp_path / "b"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://host/x", "unknown block store scheme 'ftp'"),
        ("", "empty"),
        ("file://otherhost/x", "names host"),
        ("file://relative", "names host"),
        ("memory://name", "takes no path"),
        ("replicated:memory://", "at least two"),
        ("replicated:memory://|", "at least two"),
        ("replicated:memory://|replicated:memory://", "cannot be nested"),
    ],
)
def test_registry_refuses_bad_urls_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        open_store(url)


def test_registry_accepts_a_new_scheme() -> None:
    made: list[str] = []

    def factory(url: str) -> BlockStore:
        made.append(url)
        return MemoryBlockStore()

    register_scheme("test-s3", factory)
    try:
        assert isinstance(open_store("test-s3://bucket/prefix"), MemoryBlockStore)
    finally:
        del SCHEMES["test-s3"]
    assert made == ["test-s3://bucket/prefix"]


def test_put_many_stores_each_object_and_overwrites(store: BlockStore) -> None:
    items = [(key(100 + i), os.urandom(1000 + i)) for i in range(20)]
    store.put_many(items[:3])
    store.put_many([*items, (key(100), b"replaced")])
    assert store.get(key(100)) == b"replaced"
    assert all(store.get(k) == data for k, data in items[1:])
    assert set(store.keys()) == {k for k, _data in items}
    store.put_many([])


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync"])
def test_local_put_many_with_and_without_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncfs: bool
) -> None:
    if not syncfs:
        monkeypatch.setattr(local_module, "_syncfs", None)
    store = LocalBlockStore(tmp_path / "blocks")
    items = [(key(400 + i), os.urandom(5000)) for i in range(10)]
    store.put_many(items)
    store.put_many(items[:2])
    assert sorted(store.keys()) == sorted(k for k, _data in items)
    assert all(store.get(k) == data for k, data in items)
    assert stray_files(tmp_path) == []


def test_put_many_checks_every_key_before_writing(store: BlockStore) -> None:
    with pytest.raises(InvalidRequest):
        store.put_many([(key(200), b"fine"), ("../escape", b"x")])
    if not isinstance(store, MemoryBlockStore | ReplicatedBlockStore):
        assert not store.exists(key(200))  # a local batch refuses before any write


def test_local_put_many_leaves_nothing_when_a_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlockStore(tmp_path / "blocks")
    write_temp = local_module._write_temp

    def failing(path: Path, data: bytes, mode: int = 0o600, **options: bool) -> Path:
        if data == b"refused":
            raise OSError(28, "No space left on device")
        return write_temp(path, data, mode, **options)

    monkeypatch.setattr(local_module, "_write_temp", failing)
    with pytest.raises(OSError):
        store.put_many([(key(300), b"ok"), (key(301), b"refused"), (key(302), b"ok too")])
    assert list(store.keys()) == []  # no object renamed into place, and no temp file left


def test_local_delete_removes_emptied_fan_out_folders(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "blocks")
    first, second = "ab" * 32, "abcd" + "0" * 60
    store.put(first, b"1")
    store.put(second, b"2")
    store.delete(first)
    assert sorted(p.name for p in (tmp_path / "blocks").rglob("*")) == sorted(["ab", "cd", second])
    store.delete(second)
    assert list((tmp_path / "blocks").iterdir()) == []
    store.put(first, b"again")  # the folders this store had made are made again
    assert store.get(first) == b"again" and list(store.keys()) == [first]


def test_local_writes_and_deletes_in_one_folder_at_once(tmp_path: Path) -> None:
    """A delete that empties a folder while another thread writes into it loses nothing."""
    store = LocalBlockStore(tmp_path / "blocks")
    keys = ["ab" + f"{i:062x}" for i in range(200)]

    def churn(offset: int) -> None:
        for key in keys[offset::2]:
            store.put(key, key.encode())
            store.delete(key)
            store.put(key, key.encode())

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(churn, (0, 1)))
    assert sorted(store.keys()) == sorted(keys)
    assert all(store.get(key) == key.encode() for key in keys)
