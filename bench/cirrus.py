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

    def __init__(self, home: Path, args: tuple[str, ...] = ()) -> None:
        """args: more `cirrus serve` options (e.g. `--blocks URL`)."""
        self.home = home
        self.data = home / "data"
        self.args = args
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        cmd = [cirrus_command(), "serve", "--data", str(self.data), "--port", str(self.port)]
        cmd += self.args
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

    def __init__(
        self,
        url: str,
        token_file: Path,
        mountpoint: Path,
        cache: Path,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.url, self.token_file = url, token_file
        self.mountpoint, self.cache = mountpoint, cache
        self.extra_args = extra_args
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
            *self.extra_args,
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
                self.proc.wait(30)
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

    def snapshot(self) -> tuple[int, list[dict]]:
        """Every live node, page by page from /v1/snapshot, and the cursor it is valid at."""
        page = self.get("/v1/snapshot", after_id=0, limit=10_000)
        cursor, nodes = page["cursor"], page["nodes"]
        while page["has_more"] and page["nodes"]:
            page = self.get("/v1/snapshot", after_id=nodes[-1]["id"], limit=10_000)
            nodes += page["nodes"]
        return cursor, nodes

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


class SyncWatcher:
    """Follows the server's change journal to tell when a set of files is all uploaded.

    One snapshot, then only the new journal entries: polling stays cheap for the server even
    for thousands of files, so the watching does not slow the upload it measures.
    """

    def __init__(self, api: Api, manifest: dict[str, int]) -> None:
        self.api = api
        self.missing = dict(manifest)
        self.cursor: int | None = None

    def _apply(self, node: dict) -> None:
        size = self.missing.get(node["path"])
        if (
            size is not None
            and not node.get("deleted")
            and node["status"] == "uploaded"
            and node["size"] == size
        ):
            del self.missing[node["path"]]

    def done(self) -> bool:
        """Read what changed since the last call; True when nothing is missing any more."""
        if self.cursor is None:
            self.cursor, nodes = self.api.snapshot()
            for node in nodes:
                self._apply(node)
        has_more = True
        while has_more and self.missing:
            page = self.api.get("/v1/changes", cursor=self.cursor, limit=10_000)
            for entry in page["entries"]:
                self._apply(entry["node"])
            self.cursor, has_more = page["cursor"], page["has_more"]
        return not self.missing


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

    def new_mount(self, mountpoint: Path, extra_args: tuple[str, ...] = ()) -> CirrusMount:
        """Mount the drive again at `mountpoint` with a new, empty cache directory."""
        self.generation += 1
        cache = self.scratch / f"cache-{self.generation}"
        mount = CirrusMount(self.server.url, self.token_file, mountpoint, cache, extra_args)
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

    def settle(self) -> None:
        """Remount with a fresh cache directory: any upload still queued is abandoned, so a
        slow workload's backlog does not stall the next one's measurement."""
        self.cold()

    def wait_synced(self, manifest: Manifest, timeout: float) -> float:
        assert self.api is not None
        wanted = {"/" + rel: size for rel, size in manifest.items()}
        watcher = SyncWatcher(self.api, wanted)
        return procs.wait_until(
            watcher.done,
            timeout,
            0.1,
            "the Cirrus server to hold the upload",
        )

    def wait_removed(self, folder: str, timeout: float) -> float:
        assert self.api is not None
        api = self.api
        return procs.wait_until(
            lambda: api.node("/" + folder) is None, timeout, 0.1, "the Cirrus server to delete"
        )

    def stop(self) -> None:
        try:
            for mount in reversed(self.mounts):
                mount.unmount()
            self.mounts.clear()
        finally:
            self.server.stop()
            shutil.rmtree(self.scratch, ignore_errors=True)
