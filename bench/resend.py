"""What the server pays when a second user writes content the store already holds.

Run by hand from the repository root, as root:

    python -m bench.resend [--size-mib 512] [--content stamped|random]

One server, two users, a mount each. User A writes a file (a Python writer, 1 MiB writes,
fsync at the end); once the server holds it, user B writes the very same bytes. B references
none of the blocks, so proof of possession makes B's mount send them all again; the server
verifies them and finds the objects in its store. For each of the two writes: seconds until
the server holds the file, the CPU seconds the server and the writer's mount spent (from
/proc, so the figures hold on a loaded machine) and the bytes the server wrote to its disk.

Contents: `stamped` is fio's default buffers (one 4 KiB random buffer reused, every 512-byte
sector stamped with its offset, as fio's `scramble_buffers` does, without the time stamp):
every block unique and compressible. `random` is seeded random data: incompressible.
"""

import argparse
import array
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import procs
from bench.cirrus import Api, CirrusMount, CirrusServer, SyncWatcher
from bench.datapath import cpu_seconds

MIB = 1024 * 1024


def stamped(size: int) -> Iterator[bytes]:
    buffer = bytearray(random.Random(7).randbytes(4096) * (MIB // 4096))
    words = memoryview(buffer).cast("Q")
    for offset in range(0, size, MIB):
        words[::64] = memoryview(array.array("Q", range(offset, offset + MIB, 512)))
        yield bytes(buffer)


def seeded_random(size: int) -> Iterator[bytes]:
    rng = random.Random(5)
    for _ in range(size // MIB):
        yield rng.randbytes(MIB)


CONTENTS = {"stamped": stamped, "random": seeded_random}


def disk_writes(pid: int) -> int:
    """Bytes the process has caused to be written to storage (/proc/PID/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def write_as(server: CirrusServer, mount: CirrusMount, api: Api, content: str, size: int) -> str:
    """Write the file on `mount`, wait until the server holds it; one line of figures."""
    pids = {"server": server.proc.pid, "mount": mount.proc.pid}
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    written = disk_writes(pids["server"])
    started = time.perf_counter()
    fd = os.open(mount.mountpoint / "same.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in CONTENTS[content](size):
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    watcher = SyncWatcher(api, {"/same.bin": size})
    procs.wait_until(watcher.done, 600, 0.1, "the server to hold the file")
    seconds = time.perf_counter() - started
    used = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
    disk = (disk_writes(pids["server"]) - written) / MIB
    return (
        f"{seconds:6.2f} s on the server; CPU s: server {used['server']:.2f}, "
        f"mount {used['mount']:.2f}; server wrote {disk:.1f} MiB to disk"
    )


def run(scratch: Path, size: int, content: str) -> None:
    server = CirrusServer(scratch / "server")
    server.start()
    mounts: list[CirrusMount] = []
    try:
        for user in ("a", "b"):
            token_file = scratch / f"token-{user}"
            token_file.write_text(server.create_user(user))
            token_file.chmod(0o600)
            mount = CirrusMount(server.url, token_file, scratch / user, scratch / f"cache-{user}")
            mounts.append(mount)
            mount.mount()
            api = Api(server.url, token_file.read_text().strip())
            print(f"user {user}: {write_as(server, mount, api, content, size)}", flush=True)
    finally:
        for mount in mounts:
            mount.unmount()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--content", choices=list(CONTENTS), default="stamped")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cirrus-resend-", dir="/var/tmp") as scratch:
        run(Path(scratch), args.size_mib * MIB, args.content)


if __name__ == "__main__":
    main()
