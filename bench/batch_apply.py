"""Batch application alone: how many namespace operations per second `cirrus serve` applies.

Run by hand from the repository root:

    python -m bench.batch_apply [--batch 256] [--profile-pid-file PATH]

The operations are what a mount replaying `tar -xf` of the Django sdist (the small-files
workload) sends after its blocks: for each member in tar order a `mkdir` (folders, mode 0700
as tar makes them), a `commit` of the file's blocks with its mode and mtime, or a
`symlink`; then a `setattr` per folder with its mtime and mode, as tar sets them once the
folder is full. Every block is uploaded to a fresh server before the clock starts, so each
commit lands `uploaded` at once, as the mount's do. One thread posts the batches in order,
like the mount's replay; the figures are ops/s, the server's CPU seconds, and the change
entries the server journaled per node. With `--delete` the tree is then deleted the way a
mount replays `rm -rf`: one `delete` per name, each folder after its content, timed alike.
"""

import argparse
import posixpath
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

from backend.blocks import BATCH_TYPE, MAX_BATCH_BLOCKS, pack_batch, store_frame
from backend.protocol.chunking import iter_chunks
from backend.protocol.hashing import block_hash
from bench.cirrus import CirrusServer
from bench.datapath import cpu_seconds
from bench.source_tree import fetch_tarball

ROOT = "/tree"
UPLOAD_BYTES = 8 * 1024 * 1024


def tar_ops(tar: Path) -> tuple[list[dict], dict[str, bytes]]:
    """The batch operations replaying an untar of `tar`, and every block they name."""
    ops: list[dict] = [{"op": "mkdir", "path": ROOT, "mode": 0o755, "parents": True}]
    folders: list[dict] = []
    blocks: dict[str, bytes] = {}
    with tarfile.open(tar) as archive:
        for member in archive:
            path = f"{ROOT}/{member.name.rstrip('/')}"
            mtime_ns = int(member.mtime) * 10**9
            if member.isdir():
                ops.append({"op": "mkdir", "path": path, "mode": 0o700, "parents": True})
                folders.append({"op": "setattr", "path": path, "mode": member.mode & 0o7777,
                                "mtime_ns": mtime_ns})  # fmt: skip
            elif member.issym():
                ops.append({"op": "symlink", "path": path, "target": member.linkname})
            elif member.isfile():
                named = [
                    (block_hash(chunk.data), chunk.data)
                    for chunk in iter_chunks(archive.extractfile(member).read())
                ]
                blocks.update(named)
                ops.append({
                    "op": "commit", "path": path, "base_rev": None, "size": member.size,
                    "mode": member.mode & 0o7777, "mtime_ns": mtime_ns, "commit_id": path[-64:],
                    "blocks": [{"hash": name, "size": len(data)} for name, data in named],
                })  # fmt: skip
    return ops + folders[::-1], blocks


def delete_ops(ops: list[dict]) -> list[dict]:
    """The deletions replaying `rm -rf` of what `ops` made: every name once, each folder
    right after its content (a depth-first walk, as rm does)."""
    children: dict[str, list[str]] = {}
    for op in ops:
        path = op.get("path", "")
        folder = posixpath.dirname(path)
        if op["op"] != "setattr" and path != ROOT and path not in children.get(folder, []):
            children.setdefault(folder, []).append(path)
    order: list[str] = []

    def walk(path: str) -> None:
        for child in children.get(path, []):
            walk(child)
        order.append(path)

    walk(ROOT)
    return [{"op": "delete", "path": path} for path in order]


def apply(client: httpx.Client, pid: int, ops: list[dict], batch: int) -> tuple[float, float]:
    """Post `ops` in batches of `batch`, in order; wall and server CPU seconds."""
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    for start in range(0, len(ops), batch):
        answer = client.post(
            "/v1/batch", json={"ops": ops[start : start + batch], "client": "bench"}
        )
        answer.raise_for_status()
        refused = [r for r in answer.json()["results"] if "error" in r]
        if refused:
            raise RuntimeError(f"the server refused {refused[0]}")
    return time.perf_counter() - started, cpu_seconds(pid) - cpu


def report(what: str, count: int, batch: int, wall: float, cpu: float) -> str:
    return (
        f"{count} {what} in batches of {batch}: {wall:.2f} s, {count / wall:,.0f} ops/s,"
        f" server CPU {cpu:.2f} s ({cpu / count * 1e6:,.0f} µs/op)"
    )


def upload(client: httpx.Client, blocks: dict[str, bytes]) -> None:
    batch: list[tuple[str, bytes]] = []
    size = 0
    for name, data in blocks.items():
        batch.append((name, store_frame(data)))
        size += len(data)
        if size >= UPLOAD_BYTES or len(batch) == MAX_BATCH_BLOCKS or name == next(reversed(blocks)):
            answer = client.post(
                "/v1/blocks/batch", content=pack_batch(batch), headers={"Content-Type": BATCH_TYPE}
            )
            answer.raise_for_status()
            batch, size = [], 0


def count_nodes(client: httpx.Client) -> int:
    count, after = 0, 0
    while True:
        page = client.get("/v1/snapshot", params={"after_id": after, "limit": 10_000}).json()
        count += len(page["nodes"])
        if not page["has_more"] or not page["nodes"]:
            return count
        after = page["nodes"][-1]["id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="operations per request")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "cirrus-bench")
    parser.add_argument(
        "--profile-pid-file",
        type=Path,
        help="write the server's pid here once the timed part starts (for py-spy)",
    )
    parser.add_argument("--delete", action="store_true", help="then delete the tree, timed")
    args = parser.parse_args()
    ops, blocks = tar_ops(fetch_tarball(args.cache))
    deletions = delete_ops(ops)
    for seq, op in enumerate(ops + deletions):
        if op["op"] != "commit":
            op["seq"] = seq
    with tempfile.TemporaryDirectory(prefix="cirrus-batch-", dir="/var/tmp") as home:
        server = CirrusServer(Path(home))
        server.start()
        try:
            token = server.create_user("bench")
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=300) as client:
                upload(client, blocks)
                if args.profile_pid_file is not None:
                    args.profile_pid_file.write_text(str(server.proc.pid))
                wall, cpu = apply(client, server.proc.pid, ops, args.batch)
                account = client.get("/v1/account").json()
                nodes = count_nodes(client)
                print(
                    report("ops", len(ops), args.batch, wall, cpu)
                    + f"; {account['cursor']} change entries for {nodes} nodes"
                )
                if args.delete:
                    wall, cpu = apply(client, server.proc.pid, deletions, args.batch)
                    print(report("deletions", len(deletions), args.batch, wall, cpu))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
