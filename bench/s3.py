"""Blocks on a local directory, on S3 and on two replicated S3 regions, in the same run.

Run by hand from the repository root (as root, to drop the page cache before cold reads):

    python -m bench.s3 [--size-mib 1024] [--concurrency 4]

S3 is moto's standalone server (`moto_server`, one process per region, on 127.0.0.1), so
the figures measure Cirrus's S3 path and moto, not a real object store's network. For each
store the same batches of fresh random 512 KiB blocks (as bench.ingest) are posted to
`/v1/blocks/batch` of a fresh server, then read back through `/v1/blocks/fetch`. It prints:

- upload and cold-read MiB/s for local, s3 and replicated;
- replication lag while writing: the most bytes the queue owed the secondary during the
  upload, and the seconds from the upload's end until the queue was empty;
- drain after an outage: the secondary is killed, the same amount is written (all of it
  owed), the region comes back, and the seconds until the queue is empty again.
"""

import argparse
import contextlib
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
from botocore.config import Config

from backend.blocks import BATCH_TYPE
from bench import procs
from bench.cirrus import CirrusServer
from bench.datapath import drop_caches
from bench.ingest import BLOCK_BYTES, FETCH_BLOCKS, make_batches, run_phase

MIB = 1024 * 1024
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
REGION = "us-east-1"


class MotoRegion:
    """One `moto_server` on 127.0.0.1 with one bucket (in memory: a restart empties it)."""

    def __init__(self, home: Path, name: str) -> None:
        self.home, self.name = home, name
        self.port = procs.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> None:
        command = [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1"]
        self.proc = procs.start([*command, "-p", str(self.port)], self.home / f"{self.name}.log")
        procs.wait_until(self._answers, 60, 0.1, f"moto region {self.name}")
        boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            config=Config(s3={"addressing_style": "path"}),
        ).create_bucket(Bucket=self.name)  # fmt: skip

    def _answers(self) -> bool:
        try:
            httpx.get(f"{self.endpoint}/moto-api/", timeout=1)
            return True
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        procs.stop(self.proc)

    @property
    def url(self) -> str:
        return f"s3://{self.name}/blocks?endpoint={self.endpoint}&region={REGION}"


def owed_bytes(server: CirrusServer) -> int:
    """Bytes the replication queue owes, read from the server's SQLite database."""
    with contextlib.closing(sqlite3.connect(server.data / "metadata.db", timeout=10)) as db:
        row = db.execute("SELECT coalesce(sum(size), 0) FROM replication_queue").fetchone()
    return int(row[0])


@contextlib.contextmanager
def sampling(server: CirrusServer) -> Iterator[list[tuple[float, int]]]:
    """Sample (time, owed_bytes) every 0.2 s while the body runs."""
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            samples.append((time.perf_counter(), owed_bytes(server)))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def upload_and_read(server: CirrusServer, size_mib: int, concurrency: int) -> dict[str, float]:
    batches = make_batches(size_mib * MIB)
    size = sum(len(names) for names, _ in batches) * BLOCK_BYTES / MIB
    token = server.create_user(f"bench-{time.monotonic_ns()}")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=300) as client:

        def put(batch: tuple[list[str], bytes]) -> None:
            client.post(
                "/v1/blocks/batch", content=batch[1], headers={"Content-Type": BATCH_TYPE}
            ).raise_for_status()

        def fetch(hashes: list[str]) -> None:
            client.post("/v1/blocks/fetch", json={"hashes": hashes}).raise_for_status()

        upload_s, _cpu = run_phase(server, concurrency, batches, put)
        uploaded = time.perf_counter()
        with contextlib.suppress(OSError):
            drop_caches()
        names = [name for hashes, _ in batches for name in hashes]
        asks = [names[i : i + FETCH_BLOCKS] for i in range(0, len(names), FETCH_BLOCKS)]
        read_s, _cpu = run_phase(server, concurrency, asks, fetch)
    return {"upload": size / upload_s, "read": size / read_s, "mib": size, "end": uploaded}


def run(home: Path, size_mib: int, concurrency: int) -> None:
    a, b = MotoRegion(home, "region-a"), MotoRegion(home, "region-b")
    a.start()
    b.start()
    try:
        for label, args in (
            ("local", ()),
            ("s3", ("--blocks", a.url)),
        ):
            server = CirrusServer(home / label, args)
            server.start()
            try:
                result = upload_and_read(server, size_mib, concurrency)
            finally:
                server.stop()
            print(f"{label:<11} upload {result['upload']:7.1f} MiB/s   "
                  f"cold read {result['read']:7.1f} MiB/s   ({result['mib']:.0f} MiB)")  # fmt: skip
        replicated(home, a, b, size_mib, concurrency)
    finally:
        a.stop()
        b.stop()


def replicated(home: Path, a: MotoRegion, b: MotoRegion, size_mib: int, concurrency: int) -> None:
    args = ("--blocks", f"replicated:{a.url}|{b.url}", "--replication-interval", "0.2")
    server = CirrusServer(home / "replicated", args)
    server.start()
    try:
        with sampling(server) as samples:
            result = upload_and_read(server, size_mib, concurrency)
            procs.wait_until(lambda: owed_bytes(server) == 0, 3600, 0.2, "the queue to drain")
        end = result["end"]
        most = max((owed for at, owed in samples if at <= end), default=0)
        drained = min((at for at, owed in samples if at > end and owed == 0), default=end)
        print(f"{'replicated':<11} upload {result['upload']:7.1f} MiB/s   "
              f"cold read {result['read']:7.1f} MiB/s   most owed while writing "
              f"{most / MIB:.0f} MiB, drained {drained - end:.1f} s after")  # fmt: skip

        b.stop()
        upload_and_read(server, size_mib, concurrency)
        owed = owed_bytes(server)
        b.start()
        back = time.perf_counter()
        procs.wait_until(lambda: owed_bytes(server) == 0, 3600, 0.2, "the queue to drain")
        drain_s = time.perf_counter() - back
        print(f"{'outage':<11} {owed / MIB:.0f} MiB owed to the secondary drained in "
              f"{drain_s:.1f} s after it came back (backoff included)")  # fmt: skip
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    os.environ.update(CREDENTIALS, AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
    with tempfile.TemporaryDirectory(prefix="cirrus-s3-", dir="/var/tmp") as home:
        run(Path(home), args.size_mib, args.concurrency)


if __name__ == "__main__":
    main()
