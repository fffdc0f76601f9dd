"""The stock of empty files that new dirty copies are renamed from (cache/spares.py)."""

import os
import time
from pathlib import Path

from cache.dirty import DirtyFiles
from cache.spares import SPARES_STOCK, SpareFiles


def wait_for_stock(spares: SpareFiles, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(spares) < count:
        assert time.monotonic() < deadline, f"the stock stayed at {len(spares)} of {count}"
        time.sleep(0.01)


def test_the_stock_is_refilled_below_its_low_mark(tmp_path: Path) -> None:
    spares = SpareFiles(str(tmp_path / "spare"), stock=8, low=4)
    spares.start()
    try:
        wait_for_stock(spares, 8)
        taken = [spares.take() for _ in range(5)]
        assert all(path and os.path.getsize(path) == 0 for path in taken)
        assert len(set(taken)) == 5
        wait_for_stock(spares, 8)  # 3 left, under the low mark of 4: made up again
        assert len(list((tmp_path / "spare").iterdir())) == 8 + 5  # nothing was taken away
    finally:
        spares.stop()


def test_an_empty_stock_gives_none_and_a_dirty_copy_is_made_instead(tmp_path: Path) -> None:
    dirty = DirtyFiles(str(tmp_path / "dirty"))  # never started: no spares
    assert dirty.spares.take() is None
    dirty.create_empty(7)
    os.write(dirty.fd(7), b"written")
    assert Path(dirty.path(7)).read_bytes() == b"written"
    dirty.close_all()


def test_a_dirty_copy_is_a_spare_renamed_and_replaces_an_older_one(tmp_path: Path) -> None:
    dirty = DirtyFiles(str(tmp_path / "dirty"))
    dirty.spares.start()
    try:
        wait_for_stock(dirty.spares, SPARES_STOCK)  # full: taking one starts no refill
        Path(dirty.path(9)).write_bytes(b"an older copy")
        before = len(dirty.spares)
        dirty.create_empty(9)
        assert len(dirty.spares) == before - 1
        assert Path(dirty.path(9)).read_bytes() == b""
        os.write(dirty.fd(9), b"new")
        assert Path(dirty.path(9)).read_bytes() == b"new"
    finally:
        dirty.spares.stop()
        dirty.close_all()


def test_leftover_spares_are_used_again_and_written_ones_dropped(tmp_path: Path) -> None:
    """A crash can leave spares behind, and (in a cache tampered with) files that are not
    empty: those must never become someone's dirty copy."""
    root = tmp_path / "spare"
    root.mkdir()
    (root / "0").write_bytes(b"")
    (root / "1").write_bytes(b"not empty")
    spares = SpareFiles(str(root))
    assert len(spares) == 1
    assert spares.take() == str(root / "0")
    assert not (root / "1").exists()
