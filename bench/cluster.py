"""K simulated clients against 1, 2 and 3 API servers behind HAProxy: operations per second
and latency, and what one server killed mid-run costs them.

Run by hand from the repository root, as root (PostgreSQL runs as its own system user):

    python -m bench.cluster [--clients 16] [--seconds 15] [--servers 1 2 3] [--kill]

Every run gets a fresh PostgreSQL database, N `cirrus serve` processes sharing it (and one
block store and key) and a real HAProxy running docs/haproxy.cfg in front (the test suite's
helpers start them). Each client is a user of its own with one keep-alive connection to the
balancer, and loops over four calls:
- commit: `POST /v1/files/commit` of one of 20 files, based on its last revision, naming a
  block the client stored before the clock started (the metadata write path: row lock,
  revision, journal entry, notification);
- list: `GET /v1/tree/list` of the drive's root (about 20 entries);
- fetch: `POST /v1/blocks/fetch` of that block (metadata check, block store read, decrypt);
- poll: `GET /v1/changes/poll` from the cursor before the commit, answered at once by it (a
  long poll's wake-up path, not its idle wait).
A call that fails (a connection cut, a 5xx from the balancer while a server dies) is sent
again, as the mount does: commits carry a `commit_id`, so a resend is harmless. `retried`
counts those; `errors` counts calls that still failed after 10 tries in about 5 seconds.
With --kill a last run on the largest cluster kills one server (SIGKILL) halfway through.
The clients run in this process (asyncio, httpx) on the same cores as everything else.
"""

import argparse
import asyncio
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

from backend.blocks import store_frame
from backend.protocol.hashing import block_hash
from bench.stats import percentile
from tests.postgres import find_bindir, running_postgres
from tests.support.cluster import running_cluster
from tests.support.haproxy import HAProxy
from tests.support.server import ServerProcess

OPS = ("commit", "list", "fetch", "poll")
FILES = 20
TRIES = 10
RETRY_PAUSE_S = 0.5


@dataclass
class Tally:
    """Latencies (seconds) per operation, and the calls resent or lost."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPS})
    retried: int = 0
    errors: int = 0


class Client:
    """One simulated client: a user with one connection to the balancer."""

    def __init__(self, url: str, token: str, number: int, tally: Tally) -> None:
        self._http = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0,
            trust_env=False,
        )  # fmt: skip
        self._number = number
        self._tally = tally
        self._data = random.Random(number).randbytes(4096)
        self._hash = block_hash(self._data)
        self._revs: dict[str, int] = {}
        self._cursor = 0
        self._commits = 0

    async def prepare(self) -> None:
        """Store the client's block, and learn its cursor."""
        frame = store_frame(self._data)
        (await self._http.put(f"/v1/blocks/{self._hash}", content=frame)).raise_for_status()
        self._cursor = (await self._http.get("/v1/account")).raise_for_status().json()["cursor"]

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            before = self._cursor
            await self._timed("commit", self._commit)
            await self._timed("list", lambda: self._http.get("/v1/tree/list", params={"path": "/"}))
            await self._timed("fetch", lambda: self._http.post(
                "/v1/blocks/fetch", json={"hashes": [self._hash]}
            ))  # fmt: skip
            await self._timed("poll", partial(self._poll, before))

    async def _commit(self) -> httpx.Response:
        path = f"/f{self._commits % FILES}"
        body = {
            "path": path, "base_rev": self._revs.get(path), "size": len(self._data),
            "commit_id": f"c{self._number}-{self._commits}",
            "blocks": [{"hash": self._hash, "size": len(self._data)}],
        }  # fmt: skip
        answer = await self._http.post("/v1/files/commit", json=body)
        if answer.status_code == 201:
            self._revs[path] = answer.json()["node"]["head_rev"]
            self._commits += 1
        return answer

    async def _poll(self, cursor: int) -> httpx.Response:
        answer = await self._http.get("/v1/changes/poll", params={"cursor": cursor, "timeout": 5})
        if answer.status_code == 200:
            self._cursor = answer.json()["cursor"]
        return answer

    async def _timed(self, op: str, send: Callable[[], Awaitable[httpx.Response]]) -> None:
        """Send until a 2xx answer (at most TRIES times); record the whole wait."""
        start = time.monotonic()
        for attempt in range(TRIES):
            try:
                answer = await send()
                if answer.status_code < 300:
                    self._tally.latencies[op].append(time.monotonic() - start)
                    return
                if answer.status_code < 500:
                    break  # a refusal: resending would not help
            except httpx.TransportError:
                pass
            if attempt < TRIES - 1:
                self._tally.retried += 1
                await asyncio.sleep(RETRY_PAUSE_S)
        self._tally.errors += 1

    async def close(self) -> None:
        await self._http.aclose()


async def drive(url: str, tokens: list[str], seconds: float, kill: Callable[[], None] | None):
    """Run the clients for `seconds` (calling kill halfway when given); return the tally."""
    tally = Tally()
    clients = [Client(url, token, n, tally) for n, token in enumerate(tokens)]
    try:
        await asyncio.gather(*(client.prepare() for client in clients))
        started = time.monotonic()
        runs = asyncio.gather(*(client.run(started + seconds) for client in clients))
        if kill is not None:
            await asyncio.sleep(seconds / 2)
            kill()
        await runs
        return tally, time.monotonic() - started
    finally:
        await asyncio.gather(*(client.close() for client in clients))


def one_run(root: Path, db_url: str, servers: int, clients: int, seconds: float, kill: bool):
    """Start `servers` servers and a balancer, drive them, print one line of results."""
    with (
        running_cluster(root / "cluster", db_url, servers) as processes,
        HAProxy(root / "balancer", [process.port for process in processes]) as balancer,
    ):
        url = balancer.url
        tokens = [processes[0].add_user(f"client{n}") for n in range(clients)]
        victim: ServerProcess = processes[0]
        load_before = os.getloadavg()[0]
        tally, elapsed = asyncio.run(drive(url, tokens, seconds, victim.kill if kill else None))
    report(servers, clients, kill, tally, elapsed, load_before)


def report(
    servers: int, clients: int, kill: bool, tally: Tally, elapsed: float, load: float
) -> None:
    done = sum(len(values) for values in tally.latencies.values())
    parts = [
        f"{op} {percentile(v, 50) * 1000:.1f}/{percentile(v, 99) * 1000:.1f}"
        for op, v in tally.latencies.items()
    ]
    print(
        f"{servers} server(s){' (one killed)' if kill else ''}, {clients} clients: "
        f"{done / elapsed:.0f} ops/s; p50/p99 ms: {', '.join(parts)}; "
        f"retried {tally.retried}, errors {tally.errors}; load before {load:.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--kill", action="store_true", help="a last run kills one server")
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("bench.cluster: error: PostgreSQL is not installed")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    runs = [(n, False) for n in args.servers] + ([(max(args.servers), True)] if args.kill else [])
    with running_postgres(bindir) as postgres, tempfile.TemporaryDirectory() as tmp:
        for number, (servers, kill) in enumerate(runs):
            root = Path(tmp) / f"run{number}"
            one_run(root, postgres.create_database(), servers, args.clients, args.seconds, kill)


if __name__ == "__main__":
    main()
