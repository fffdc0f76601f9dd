"""Server ingest alone: how fast `cirrus serve` stores batches of blocks, and at what CPU cost.

Run by hand from the repository root:

    python -m bench.ingest [--size-mib 1024] [--concurrency N] [--batch-blocks N] [--fetch]

Batch bodies of fresh random blocks (~512 KiB, framed at zstd's fastest level as the mount
frames incompressible data, as many per request as the mount's uploader sends: ~16 MiB) are
prepared first, so the client costs almost nothing while the clock runs; then `concurrency`
threads (by default as many as the mount's uploads in flight) post them to `/v1/blocks/batch`
of a fresh server. With `--fetch` the same blocks are read back through `/v1/blocks/fetch`
(as many per request as the mount's read-ahead asks) after the page cache is dropped (root
only). The figures are the server's wall time and CPU seconds per phase, so a
server change can be judged apart from the mount that shares the machine in a full run.
"""

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx

from backend.blocks import BATCH_TYPE, pack_batch, store_frame
from backend.protocol.hashing import block_hash
from bench.cirrus import CirrusServer
from bench.datapath import cpu_seconds, drop_caches
from mountfs.content import FETCH_BATCH
from mountfs.upload import BATCH_BYTES, UPLOAD_CONCURRENCY

MIB = 1024 * 1024
BLOCK_BYTES = 512 * 1024
T = TypeVar("T")


def make_batches(size: int, per_batch: int) -> list[tuple[list[str], bytes]]:
    """(hashes, body) of batch uploads of `per_batch` fresh random blocks, `size` bytes in all."""
    batches = []
    for _ in range(size // (BLOCK_BYTES * per_batch)):
        blocks = [os.urandom(BLOCK_BYTES) for _ in range(per_batch)]
        named = [(block_hash(data), store_frame(data)) for data in blocks]
        batches.append(([name for name, _ in named], pack_batch(named)))
    return batches


def run_phase(
    server: CirrusServer, concurrency: int, calls: list[T], send: Callable[[T], None]
) -> tuple[float, float]:
    """Wall seconds and server CPU seconds for `concurrency` threads to make every call."""
    assert server.proc is not None
    cpu = cpu_seconds(server.proc.pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in pool.map(send, calls):
            pass
    return time.perf_counter() - started, cpu_seconds(server.proc.pid) - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=UPLOAD_CONCURRENCY)
    parser.add_argument("--batch-blocks", type=int, default=BATCH_BYTES // BLOCK_BYTES)
    parser.add_argument("--fetch", action="store_true", help="also read the blocks back cold")
    args = parser.parse_args()
    batches = make_batches(args.size_mib * MIB, args.batch_blocks)
    size = sum(len(names) for names, _ in batches) * BLOCK_BYTES
    with tempfile.TemporaryDirectory(prefix="cirrus-ingest-", dir="/var/tmp") as home:
        server = CirrusServer(Path(home))
        server.start()
        try:
            token = server.create_user("bench")
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:

                def put(batch: tuple[list[str], bytes]) -> None:
                    answer = client.post(
                        "/v1/blocks/batch", content=batch[1], headers={"Content-Type": BATCH_TYPE}
                    )
                    answer.raise_for_status()

                wall, cpu = run_phase(server, args.concurrency, batches, put)
                print(
                    f"ingest {size / MIB:.0f} MiB: {wall:6.2f} s {size / MIB / wall:7.1f} MiB/s"
                    f"  server CPU {cpu:.2f} s"
                )
                if args.fetch:
                    names = [name for hashes, _ in batches for name in hashes]
                    asks = [names[i : i + FETCH_BATCH] for i in range(0, len(names), FETCH_BATCH)]

                    def fetch(hashes: list[str]) -> None:
                        client.post("/v1/blocks/fetch", json={"hashes": hashes}).raise_for_status()

                    drop_caches()
                    wall, cpu = run_phase(server, args.concurrency, asks, fetch)
                    print(
                        f"fetch  {size / MIB:.0f} MiB: {wall:6.2f} s "
                        f"{size / MIB / wall:7.1f} MiB/s  server CPU {cpu:.2f} s"
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
