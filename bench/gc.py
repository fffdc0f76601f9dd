"""Garbage collection: the rate at which blocks are deleted, and whether a drive's space
comes back.

Run by hand from the repository root:

    python -m bench.gc [--size-mib 1024] [--file-mib 32]

A fresh `cirrus serve` is measured empty (its data directory, in disk blocks as `du`
counts them), then one user writes `size` MiB of fresh random 512 KiB blocks as files of
`file` MiB (batch uploads and commits, as the mount sends them), deletes the folder holding
them and purges the trash, then reads the change journal to its end as the drive's device,
so that the server's journal trim (every JOURNAL_INTERVAL_S) drops its entries; `cirrus
admin gc --grace 0` collects the blocks, reports its rate
and gives the metadata database's free pages back (incremental vacuum). A last collection a
day later (the clock moved with CIRRUS_CLOCK_OFFSET_FILE) drops the blocks' tombstones. The
server is stopped before each measurement, so SQLite's WAL is checkpointed into the
database. The directory is measured again after the collection, and once more after a full
VACUUM of the metadata database, to show what is left to gain.
"""

import argparse
import contextlib
import os
import sqlite3
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from backend.blocks import BATCH_TYPE, pack_batch, store_frame
from backend.clock import OFFSET_FILE_VARIABLE
from backend.protocol.hashing import block_hash
from bench.cirrus import CirrusServer, cirrus_command

MIB = 1024 * 1024
BLOCK_BYTES = 512 * 1024
BATCH_BLOCKS = 16
DAY_S = 86_400
JOURNAL_INTERVAL_S = 1  # the server trims the change journal this often


def disk_usage(folder: Path) -> tuple[int, int]:
    """(bytes of disk allocated, as `du` counts them; bytes of content, as `du -b`) of the
    folder and everything in it."""
    info = folder.lstat()
    allocated, apparent = info.st_blocks * 512, info.st_size
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            info = (Path(root) / name).lstat()
            allocated += info.st_blocks * 512
            apparent += info.st_size
    return allocated, apparent


def objects(folder: Path) -> int:
    return sum(1 for p in (folder / "blocks").rglob("*") if p.is_file())


def write_files(client: httpx.Client, size: int, file_bytes: int) -> int:
    """Write size bytes of random blocks as files under /drive; return the blocks sent."""
    per_file = file_bytes // BLOCK_BYTES
    sent = 0

    def one(index: int) -> int:
        blocks = [os.urandom(BLOCK_BYTES) for _ in range(per_file)]
        named = [(block_hash(b), store_frame(b)) for b in blocks]
        for start in range(0, len(named), BATCH_BLOCKS):
            body = pack_batch(named[start : start + BATCH_BLOCKS])
            answer = client.post(
                "/v1/blocks/batch", content=body, headers={"Content-Type": BATCH_TYPE}
            )
            answer.raise_for_status()
        commit = {
            "path": f"/drive/f{index:04d}",
            "size": per_file * BLOCK_BYTES,
            "blocks": [{"hash": h, "size": BLOCK_BYTES} for h, _frame in named],
        }
        client.post("/v1/files/commit", json=commit).raise_for_status()
        return len(named)

    with ThreadPoolExecutor(4) as pool:
        sent = sum(pool.map(one, range(size // file_bytes)))
    return sent


def read_every_change(client: httpx.Client) -> None:
    """Read the journal to its end, as the drive's one device: its read mark then lets the
    server trim every entry (journal compaction)."""
    cursor = 0
    for _ in range(1_000_000):
        page = client.get("/v1/changes", params={"cursor": cursor, "limit": 10_000}).json()
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    client.get("/v1/changes", params={"cursor": cursor}).raise_for_status()


def admin_gc(data: Path, *args: str, env: dict[str, str] | None = None) -> str:
    command = [cirrus_command(), "admin", "gc", "--data", str(data), *args]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"cirrus admin gc failed: {out.stderr.strip()}")
    return out.stdout.strip()


def report(label: str, data: Path, empty: tuple[int, int]) -> None:
    now = disk_usage(data)
    shown = [
        f"{used / 1024:9.0f} KiB ({(used - base) / base:+8.2%})"
        for used, base in zip(now, empty, strict=True)
    ]
    print(f"{label:<28} {objects(data):5d} objects  du {shown[0]}  du -b {shown[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--file-mib", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cirrus-gc-", dir="/var/tmp") as home:
        server = CirrusServer(Path(home), ("--journal-interval", str(JOURNAL_INTERVAL_S)))
        server.start()
        try:
            token = server.create_user("bench")
            server.stop()
            empty = disk_usage(server.data)
            report("empty", server.data, empty)
            server.start()
            headers = {"Authorization": f"Bearer {token}", "X-Cirrus-Device": "bench"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=300) as client:
                sent = write_files(client, args.size_mib * MIB, args.file_mib * MIB)
                server.stop()
                report(f"written ({sent} blocks)", server.data, empty)
                server.start()
                gone = client.post("/v1/tree/delete", json={"path": "/drive", "recursive": True})
                gone.raise_for_status()
                client.post("/v1/trash/purge", json={"all": True}).raise_for_status()
                read_every_change(client)
                time.sleep(3 * JOURNAL_INTERVAL_S)  # the journal trim that follows
            print(admin_gc(server.data, "--grace", "0").replace("\n", "; "))
            server.stop()
            report("deleted, pruned, collected", server.data, empty)
            clock = Path(home) / "clock"
            clock.write_text(str(DAY_S + 3600))
            later = {**os.environ, OFFSET_FILE_VARIABLE: str(clock)}
            admin_gc(server.data, "--grace", "0", env=later)
            report("a day later (tombstones)", server.data, empty)
            with contextlib.closing(sqlite3.connect(server.data / "metadata.db")) as db:
                db.execute("VACUUM")
            report("after VACUUM", server.data, empty)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
