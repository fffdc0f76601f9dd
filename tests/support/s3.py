"""A real S3 endpoint for tests: moto's standalone server on a free 127.0.0.1 port.

    with MotoServer(tmp_path / "moto.log") as s3:       # start() ... stop()
        s3.create_bucket("blocks")
        url = s3.store_url("blocks", "prefix")             # s3://blocks/prefix?endpoint=...
        s3.pause(); s3.resume()                            # an outage: no answer, data kept
        s3.kill(); s3.start()                              # a replacement region, same port

Two instances on two ports are two regions. moto keeps its objects in memory, so a restart
is a region that came back empty: what a replacement region looks like. Credentials are
dummy keys in the environment (`s3_credentials`), never in a URL.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import boto3
import httpx
from botocore.config import Config

from tests.support.server import free_port

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    # Never read the machine's own configuration or ask for an instance role.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def s3_credentials(**overrides: str) -> Iterator[None]:
    """Dummy AWS credentials in os.environ (inherited by servers the test starts), restored
    after."""
    wanted = {**CREDENTIALS, **overrides}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class MotoServer:
    """One `moto_server` process; `env` adds variables (e.g. to enforce authentication)."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = Path(log_path)
        self.env = env or {}
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._client = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MotoServer":
        """Start (or restart on the same port); wait until it answers HTTP."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("moto is already running")
        self.port = self.port or free_port()
        command = [str(Path(sys.executable).with_name("moto_server"))]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*command, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1.0, trust_env=False)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"moto_server not ready after {START_TIMEOUT_S}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.resume()  # a paused process would not act on SIGTERM
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the region stops answering at once (and forgets its objects)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)

    def pause(self) -> None:
        """SIGSTOP: the region stops answering (connections hang) but keeps its objects."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def client(self):  # -> botocore S3 client
        """A boto3 client for inspecting the buckets directly (made once: that is slow)."""
        if self._client is not None:
            return self._client
        config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
        self._client = boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        ).client("s3", endpoint_url=self.endpoint, config=config)
        return self._client

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def keys(self, bucket: str) -> set[str]:
        """The keys of every object in a bucket (a listing: no object is read)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {entry["Key"] for page in pages for entry in page.get("Contents", [])}

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object of a bucket by key (for assertions on small trees)."""
        client = self.client()
        return {
            key: client.get_object(Bucket=bucket, Key=key)["Body"].read()
            for key in sorted(self.keys(bucket))
        }

    def store_url(self, bucket: str, prefix: str = "blocks", **options: str) -> str:
        query = "&".join(f"{name}={value}" for name, value in options.items())
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}&region={REGION}" + (
            f"&{query}" if query else ""
        )

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
