"""Data path throughput: upload of a large write, and a cold sequential read, through a mount.

Run by hand from the repository root, as root (it drops the page cache):

    python -m bench.datapath [--size-mib 1024]

Steps: a local file of random data is prepared; it is copied into a fresh mount with
`dd bs=1M conv=fsync` (the foreground write); the clock runs on until the server reports the
file uploaded at its full size (the background upload), which is also given from the moment
`dd` returned, with the CPU each process spent in each of the two phases. The mount is then
unmounted, the page cache dropped and the drive mounted again with an EMPTY cache directory,
so a sequential `dd` read fetches every block from the server. The same read of the local
file, after the same cache drop, is the reference. The copy read back is compared with the source.
"""

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.cirrus import Api, CirrusMount, CirrusServer

MIB = 1024 * 1024


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def dd(source: Path, target: Path | str, fsync: bool = False) -> float:
    """Seconds for `dd bs=1M` to copy source to target."""
    cmd = ["dd", f"if={source}", f"of={target}", "bs=1M", "status=none"]
    started = time.perf_counter()
    subprocess.run([*cmd, *(["conv=fsync"] if fsync else [])], check=True)
    return time.perf_counter() - started


def make_source(path: Path, size: int) -> None:
    subprocess.run(
        ["dd", "if=/dev/urandom", f"of={path}", "bs=1M", f"count={size // MIB}", "status=none"],
        check=True,
    )


def rate(size: int, seconds: float) -> str:
    return f"{seconds:7.2f} s  {size / MIB / seconds:8.1f} MiB/s"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds the server and a mount spend in a phase: unlike wall time, this does not
    depend on what else the machine runs, and says what an idle 2-core machine could do."""

    def __init__(self, server: CirrusServer, mount: CirrusMount) -> None:
        self.pids = {"server": server.proc.pid, "mount": mount.proc.pid}
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def report(self) -> str:
        used = {name: cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}
        return "  (CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in used.items()) + ")"


def run(scratch: Path, size: int) -> None:
    source = scratch / "source.bin"
    make_source(source, size)
    server = CirrusServer(scratch / "server")
    server.start()
    token_file = scratch / "token"
    token_file.write_text(server.create_user("bench"))
    api = Api(server.url, token_file.read_text())
    mounts: list[CirrusMount] = []
    try:
        first = CirrusMount(server.url, token_file, scratch / "mnt", scratch / "cache1")
        mounts.append(first)
        first.mount()
        meter = CpuMeter(server, first)
        started = time.perf_counter()
        written = dd(source, scratch / "mnt" / "big.bin", fsync=True)
        print(f"write (dd conv=fsync)       {rate(size, written)}{meter.report()}")
        meter = CpuMeter(server, first)
        returned = time.perf_counter()
        procs.wait_until(lambda: api.uploaded("/big.bin", size), 600, 0.05, "the upload")
        done = time.perf_counter()
        print(f"write until on the server   {rate(size, done - started)}")
        print(f"  of which after dd returned {done - returned:6.2f} s{meter.report()}")
        first.unmount()
        mounts.remove(first)
        drop_caches()
        second = CirrusMount(server.url, token_file, scratch / "mnt", scratch / "cache2")
        mounts.append(second)
        second.mount()
        meter = CpuMeter(server, second)
        cold = dd(scratch / "mnt" / "big.bin", "/dev/null")
        print(f"cold read from the server   {rate(size, cold)}{meter.report()}")
        drop_caches()
        print(f"local disk read (reference) {rate(size, dd(source, '/dev/null'))}")
        same = subprocess.run(["cmp", str(source), str(scratch / "mnt" / "big.bin")]).returncode
        print("read back identical" if same == 0 else "READ BACK DIFFERS")
    finally:
        for mount in mounts:
            mount.unmount()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cirrus-datapath-", dir="/var/tmp") as scratch:
        run(Path(scratch), args.size_mib * MIB)


if __name__ == "__main__":
    main()
