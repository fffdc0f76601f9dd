"""The server under hostile load: its memory while refusing large unauthenticated bodies, and
another user's latency while a maximal commit batch is applied.

Run by hand from the repository root:

    python -m bench.hostile [--requests 100] [--body-mb 100] [--parallel 10] [--blocks N]

1. `--requests` POSTs to /v1/blocks/missing without a token, each announcing and sending a
   `--body-mb` body, `--parallel` at a time, on raw sockets. Reported: the server's resident
   memory (VmRSS) before and after, and its peak (VmHWM), from /proc.
2. One user sends a /v1/batch whose single commit names `--blocks` blocks (by default the
   most a batch may name, 524,289) the server does not have, while another user creates a
   folder every 50 ms. Reported: the batch's duration, and the other user's latencies
   during the batch and, for comparison, in the QUIET_S seconds before it. The batch is
   sent from a process of its own: sent from this one, building and reading 80 MB of JSON
   held this process's GIL, and the other user's requests waited for it here, not on the
   server.
"""

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from backend.api.models import MAX_BLOCKS_PER_FILE
from bench.cirrus import CirrusServer

PIECE = b" " * (256 * 1024)
BLOCK_SIZE = 100_000
QUIET_S = 5.0  # the other user's latency measured alone first, for comparison


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def unauthenticated_post(port: int, body_bytes: int) -> str:
    """Send one request without a token; the status line of the answer."""
    head = (
        f"POST /v1/blocks/missing HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {body_bytes}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(head)
            sent = 0
            while sent < body_bytes:
                sent += sock.send(PIECE[: body_bytes - sent])
        except OSError:
            pass  # the server answered and closed: the rest is never read
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer.split(b"\r\n", 1)[0].decode(errors="replace")


def memory_run(server: CirrusServer, requests: int, body_mb: int, parallel: int) -> dict:
    pid = server.proc.pid
    before = memory_mib(pid)
    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        statuses = list(
            pool.map(lambda _: unauthenticated_post(server.port, body_mb << 20), range(requests))
        )
    after = memory_mib(pid)
    return {
        "requests": requests,
        "body_mb": body_mb,
        "seconds": round(time.monotonic() - started, 1),
        "answers": {status: statuses.count(status) for status in set(statuses)},
        "rss_before_mib": round(before["VmRSS"], 1),
        "rss_after_mib": round(after["VmRSS"], 1),
        "peak_before_mib": round(before["VmHWM"], 1),
        "peak_after_mib": round(after["VmHWM"], 1),
    }


def latency_run(server: CirrusServer, blocks: int) -> dict:
    heavy, light = server.create_user("heavy"), server.create_user("light")
    commit = {
        "op": "commit",
        "path": "/huge",
        "size": BLOCK_SIZE * blocks,
        "blocks": [{"hash": os.urandom(32).hex(), "size": BLOCK_SIZE} for _ in range(blocks)],
    }
    body = json.dumps({"ops": [commit]}).encode()
    del commit
    seen: list[float] = []
    busy = threading.Event()
    busy.set()

    def watch() -> None:
        headers = {"Authorization": f"Bearer {light}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
            while busy.is_set():
                started = time.monotonic()
                client.post("/v1/tree/mkdir", json={"path": f"/d{len(seen)}"}).raise_for_status()
                seen.append(time.monotonic() - started)
                time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        time.sleep(QUIET_S)
        quiet = sorted(seen)
        before = len(seen)
        with multiprocessing.get_context("spawn").Pool(1) as sender:
            started = time.monotonic()
            status, results = sender.apply(_send_batch, (server.url, heavy, body))
            took = time.monotonic() - started
        during = seen[before:]
    finally:
        busy.clear()
        watcher.join()
    if status != 200:
        raise RuntimeError(f"the batch was refused: {status}")
    during.sort()
    return {
        "quiet_requests": len(quiet),
        "quiet_median_ms": round(statistics.median(quiet) * 1000),
        "quiet_max_ms": round(quiet[-1] * 1000),
        "blocks": blocks,
        "body_mb": round(len(body) / 2**20, 1),
        "batch_seconds": round(took, 1),
        "status": results[0]["status"],
        "other_requests": len(during),
        "other_median_ms": round(statistics.median(during) * 1000),
        "other_p99_ms": round(during[int(len(during) * 0.99)] * 1000),
        "other_max_ms": round(during[-1] * 1000),
    }


def _send_batch(url: str, token: str, body: bytes) -> tuple[int, list[dict]]:
    """POST the batch (in the sender process); its status and results."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    answer = httpx.post(f"{url}/v1/batch", content=body, headers=headers, timeout=3600)
    results = answer.json()["results"] if answer.status_code == 200 else []
    return answer.status_code, [{"status": r["status"]} for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--body-mb", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=MAX_BLOCKS_PER_FILE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cirrus-hostile-") as home:
        server = CirrusServer(Path(home))
        server.start()
        try:
            print(json.dumps(memory_run(server, args.requests, args.body_mb, args.parallel)))
            print(json.dumps(latency_run(server, args.blocks)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
