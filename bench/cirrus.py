"""The Cirrus target: a `cirrus serve` process and `cirrus mount`s of it, driven by the CLI.

The harness uses only the command line (`serve`, `admin create-user`, `mount`, `unmount`) and the
HTTP API, the interfaces a user has, and asks the server itself when the drive is in sync.
"""

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench import procs
from bench.targets import Manifest, Target


def cirrus_command() -> str:
    """The `cirrus` script next to this interpreter (a venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "cirrus"
    return str(beside) if beside.exists() else (shutil.which("cirrus") or "cirrus")


class CirrusServer:
    """One `cirrus serve` on 127.0.0.1 with a fresh data directory."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data = home / "data"
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        cmd = [cirrus_command(), "serve", "--data", str(self.data), "--port", str(self.port)]
        self.proc = procs.start(cmd, self.home / "server.log")
        procs.wait_until(self._healthy, 60, 0.1, "the Cirrus server to answer")

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"cirrus serve exited; see {self.home / 'server.log'}")
        try:
            return httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def create_user(self, name: str) -> str:
        """A new user's bearer token (the last word `cirrus admin create-user` prints)."""
        cmd = [cirrus_command(), "admin", "create-user", name, "--data", str(self.data)]
        for _ in range(5):  # the server may still hold the database while it starts
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode == 0:
                return out.stdout.split()[-1]
            time.sleep(0.5)
        raise RuntimeError(f"cirrus admin create-user failed: {out.stderr.strip()}")

    def stop(self) -> None:
        procs.stop(self.proc)
        self.proc = None


class CirrusMount:
    """One `cirrus mount` in the foreground, with its own cache directory."""

    def __init__(self, url: str, token_file: Path, mountpoint: Path, cache: Path) -> None:
        self.url, self.token_file = url, token_file
        self.mountpoint, self.cache = mountpoint, cache
        self.proc: subprocess.Popen | None = None

    def mount(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        cmd = [
            cirrus_command(),
            "mount",
            self.url,
            str(self.mountpoint),
            "--token-file",
            str(self.token_file),
            "--cache-dir",
            str(self.cache),
            "--foreground",
        ]
        self.proc = procs.start(cmd, self.cache.parent / f"{self.cache.name}.log")
        procs.wait_until(self._mounted, 60, 0.05, "the Cirrus mount")

    def _mounted(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"cirrus mount exited with {self.proc.returncode}")
        return procs.listed_in_mounts(self.mountpoint)

    def unmount(self) -> None:
        procs.unmount(self.mountpoint, [cirrus_command(), "unmount", str(self.mountpoint)])
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)
        procs.stop(self.proc)
        self.proc = None


class Api:
    """The few read-only calls the harness makes to ask the server what it holds."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def get(self, path: str, **params: object) -> dict:
        answer = self.client.get(path, params=params)
        answer.raise_for_status()
        return answer.json()

    def account(self) -> dict:
        return self.get("/v1/account")

    def nodes(self) -> list[dict]:
        """Every live node, page by page from /v1/snapshot."""
        nodes, after = [], 0
        while True:
            page = self.get("/v1/snapshot", after_id=after, limit=10_000)
            nodes += page["nodes"]
            if not page["has_more"] or not page["nodes"]:
                return nodes
            after = page["nodes"][-1]["id"]

    def node(self, path: str) -> dict | None:
        """The file's Node, or None while the server does not know it."""
        answer = self.client.get("/v1/tree/stat", params={"path": path})
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return answer.json()

    def uploaded(self, path: str, size: int, after_rev: int = 0) -> bool:
        """True when a revision newer than `after_rev` is fully uploaded with the given size."""
        node = self.node(path)
        return (
            node is not None
            and node["status"] == "uploaded"
            and node["size"] == size
            and node["rev"] > after_rev
        )

    def holds(self, manifest: dict[str, int]) -> bool:
        """True when the server has every file of `manifest` (absolute drive paths) uploaded."""
        if len(manifest) <= 16:
            return all(self.uploaded(p, s) for p, s in manifest.items())
        if self.account().get("files", len(manifest)) < len(manifest):
            return False
        done = {
            n["path"]
            for n in self.nodes()
            if n["type"] == "file"
            and n["status"] == "uploaded"
            and manifest.get(n["path"]) == n["size"]
        }
        return len(done) == len(manifest)


class CirrusTarget(Target):
    """A fresh server and a mount of it; `cold` remounts with an empty cache directory."""

    name = "cirrus"

    def __init__(self, scratch: Path) -> None:
        super().__init__(scratch)
        self.server = CirrusServer(self.scratch / "server")
        self.mounts: list[CirrusMount] = []
        self.main: CirrusMount | None = None
        self.api: Api | None = None
        self.generation = 0

    @property
    def root(self) -> Path:
        return self.scratch / "mnt"

    @property
    def token_file(self) -> Path:
        return self.scratch / "token"

    def start(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        self.server.start()
        token = self.server.create_user("bench")
        self.token_file.write_text(token + "\n")
        self.token_file.chmod(0o600)
        self.api = Api(self.server.url, token)
        self.main = self.new_mount(self.root)

    def new_mount(self, mountpoint: Path) -> CirrusMount:
        """Mount the drive again at `mountpoint` with a new, empty cache directory."""
        self.generation += 1
        mount = CirrusMount(
            self.server.url, self.token_file, mountpoint, self.scratch / f"cache-{self.generation}"
        )
        self.mounts.append(mount)
        mount.mount()
        return mount

    def drop_mount(self, mount: CirrusMount) -> None:
        """Unmount and forget one mount (its cache directory is deleted)."""
        mount.unmount()
        self.mounts.remove(mount)
        shutil.rmtree(mount.cache, ignore_errors=True)

    def cold(self) -> None:
        """Remount with an empty cache directory, so every block comes from the server."""
        assert self.main is not None
        self.drop_mount(self.main)
        self.main = self.new_mount(self.root)
        super().cold()

    def wait_synced(self, manifest: Manifest, timeout: float) -> float:
        assert self.api is not None
        wanted = {"/" + rel: size for rel, size in manifest.items()}
        interval = 0.1 if len(wanted) <= 16 else 0.3  # a snapshot walk is not free
        return procs.wait_until(
            lambda: self.api.holds(wanted),
            timeout,
            interval,
            "the Cirrus server to hold the upload",
        )

    def stop(self) -> None:
        try:
            for mount in reversed(self.mounts):
                mount.unmount()
            self.mounts.clear()
        finally:
            self.server.stop()
            shutil.rmtree(self.scratch, ignore_errors=True)
