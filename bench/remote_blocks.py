"""Block transfer throughput of the mount's HTTP client against a local `cirrus serve`.

Run by hand from the repository root:

    python -m bench.remote_blocks [--blocks 96] [--block-kib 512] [--concurrency 1 4 8]

For each concurrency, fresh random blocks (incompressible, never seen by the server, so no
dedup shortcut) are uploaded with RemoteDrive.put_block by that many trio tasks sharing one
connection pool, then downloaded with get_block (decompressed and hash-checked). The figures
say how many uploads the mount should keep in flight: past the knee, more tasks only queue.
"""

import argparse
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from backend.protocol.hashing import block_hash
from bench.cirrus import CirrusServer
from mountfs.remote import RemoteDrive

KIB = 1024
Block = tuple[str, bytes]


def random_blocks(count: int, size: int) -> list[Block]:
    blocks = [os.urandom(size) for _ in range(count)]
    return [(block_hash(data), data) for data in blocks]


async def timed(
    blocks: list[Block], concurrency: int, transfer: Callable[[Block], Awaitable[None]]
) -> float:
    """Seconds for `concurrency` tasks to run `transfer` once on every block."""
    pending = iter(blocks)

    async def worker() -> None:
        for block in pending:
            await transfer(block)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return time.perf_counter() - start


async def measure(url: str, token: str, args: argparse.Namespace) -> list[tuple]:
    rows = []
    async with RemoteDrive(url, token, max_connections=max(args.concurrency)) as remote:

        async def put(block: Block) -> None:
            await remote.put_block(*block)

        async def get(block: Block) -> None:
            if await remote.get_block(block[0]) != block[1]:
                raise AssertionError(f"block {block[0]} came back different")

        for concurrency in args.concurrency:
            blocks = random_blocks(args.blocks, args.block_kib * KIB)
            for name, transfer in (("put_block", put), ("get_block", get)):
                seconds = await timed(blocks, concurrency, transfer)
                rows.append((name, concurrency, seconds, len(blocks), args.block_kib * KIB))
    return rows


def report(rows: list[tuple]) -> None:
    print(f"{'operation':<10} {'tasks':>5} {'MB/s':>8} {'req/s':>8} {'ms/req':>8}")
    for name, concurrency, seconds, count, size in rows:
        rate = count / seconds
        print(
            f"{name:<10} {concurrency:>5} {rate * size / 1e6:>8.1f} {rate:>8.1f} "
            f"{1000 * seconds * concurrency / count:>8.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=96, help="blocks per run (96)")
    parser.add_argument("--block-kib", type=int, default=512, help="block size in KiB (512)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cirrus-bench-") as home:
        server = CirrusServer(Path(home))
        try:
            server.start()
            token = server.create_user("bench")
            rows = trio.run(measure, server.url, token, args)
        finally:
            server.stop()
    print(f"{os.cpu_count()} cores, {args.blocks} random blocks of {args.block_kib} KiB per run")
    report(rows)


if __name__ == "__main__":
    main()
