"""Workload 6: how many idle long polls one server process holds, at what memory, and how fast
one change wakes them all.

A separate, fresh server is started so its resident memory is the polls' cost and nothing
else's. The polls are raw HTTP/1.1 requests on asyncio sockets: a client library would cost
more memory and CPU here than the server under test.
"""

import asyncio
import json
import os
import time
from pathlib import Path

import httpx

from bench.cirrus import CirrusServer
from bench.context import Bench

WORKLOAD = "6 long polls"
BATCH = 200  # connections opened at once; below the server's listen backlog


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        total += next(
            (
                int(line.split()[1]) * 1024
                for line in status.splitlines()
                if line.startswith("VmRSS:")
            ),
            0,
        )
    return total


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def until_idle(pid: int, timeout: float = 300.0) -> float:
    """Seconds until the process uses under 5 % of a core for a whole second.

    An opened poll is not yet a held poll: the server still has to read and authenticate it.
    Waking before that backlog is drained would time the backlog, not the wake-up.
    """
    start = time.perf_counter()
    used = cpu_seconds(pid)
    while time.perf_counter() - start < timeout:
        await asyncio.sleep(1.0)
        now = cpu_seconds(pid)
        if now - used < 0.05:
            return time.perf_counter() - start
        used = now
    raise TimeoutError("the server never went idle while holding the polls")


async def one_poll(port: int, request: bytes, opened: asyncio.Event) -> tuple[float, bool]:
    """Send one long poll, then wait for its answer: (arrival time, whether it saw a change)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        opened.set()
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = await reader.read(4096)
            if not chunk:
                break
            data += chunk
        arrived = time.perf_counter()
        body = data.split(b"\r\n\r\n", 1)[-1]
        try:
            changed = bool(json.loads(body[body.index(b"{") :]).get("changes"))
        except ValueError:
            changed = False
        return arrived, changed
    finally:
        writer.close()


async def hold_and_wake(server: CirrusServer, token: str, count: int) -> dict[str, float]:
    """Open `count` polls in batches, check they are held, measure RSS, wake them, time it."""
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        cursor = (await api.get("/v1/account")).json()["cursor"]
        request = (
            f"GET /v1/changes/poll?cursor={cursor}&timeout=300 HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        rss_before = rss_bytes(server.proc.pid)
        tasks = []
        started = time.perf_counter()
        for first in range(0, count, BATCH):
            events = [asyncio.Event() for _ in range(min(BATCH, count - first))]
            tasks += [asyncio.create_task(one_poll(server.port, request, e)) for e in events]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 60)
        await until_idle(server.proc.pid)  # every request read and waiting
        open_seconds = time.perf_counter() - started - 1.0  # the idle second is not setup
        held = sum(not t.done() for t in tasks)
        rss = rss_bytes(server.proc.pid)
        woke_at = time.perf_counter()
        (await api.post("/v1/tree/mkdir", json={"path": "/wake"})).raise_for_status()
        done, _ = await asyncio.wait(tasks, timeout=60)
        answers = [t.result() for t in done if t.exception() is None]
        woken = [arrived for arrived, changed in answers if changed and arrived >= woke_at]
        for task in tasks:
            task.cancel()
        return {
            "held": held,
            "rss": rss,
            "rss_before": rss_before,
            "open_s": open_seconds,
            "woken": len(woken),
            "wake_s": max(woken) - woke_at if woken else float("nan"),
        }


def run(bench: Bench) -> None:
    """Start a fresh server, hold the polls, record the figures in the Cirrus column."""
    # The polls, the request that wakes them and a margin: the server's default cap on open
    # connections is 10,000, the number of polls held by default.
    room = ("--max-connections", str(bench.sizes.long_polls + 100))
    server = CirrusServer(bench.scratch / "longpoll", room)
    try:
        server.start()
        token = server.create_user("polls")
        got = asyncio.run(hold_and_wake(server, token, bench.sizes.long_polls))
    except Exception as exc:
        bench.table.note(f"cirrus: long-poll workload failed: {exc!r}")
        return
    finally:
        server.stop()
    table, n = bench.table, bench.sizes.long_polls
    table.record(
        WORKLOAD, f"idle long polls held (of {n:,} opened)", "polls", "cirrus", got["held"]
    )
    table.record(
        WORKLOAD,
        f"server RSS holding them (idle: {got['rss_before'] / 2**20:.0f} MiB)",
        "MiB",
        "cirrus",
        got["rss"] / 2**20,
        higher_better=False,
    )
    table.record(
        WORKLOAD,
        "time to open them until the server is idle",
        "s",
        "cirrus",
        got["open_s"],
        higher_better=False,
    )
    table.record(WORKLOAD, "polls woken by one change", "polls", "cirrus", got["woken"])
    table.record(
        WORKLOAD, "all of them woken after", "s", "cirrus", got["wake_s"], higher_better=False
    )
