"""A block store in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, Garage).

    s3://BUCKET/PREFIX?endpoint=https://host:9000&region=eu-west-1&storage_class=GLACIER_IR

Objects live at `PREFIX/HASH`. Credentials come from boto3's standard chain (environment,
`~/.aws/credentials`, an instance or container role), never from the URL. The hot path
uses only PutObject, GetObject, HeadObject and DeleteObjects: no listing (`keys()` lists,
for verification and tools only). One client with a pool of connections is shared by
every thread, and `put_many` and `held` (the check before a batch upload) send their
requests concurrently, so a batch costs about one round trip rather than one per object.
Connect timeouts are short and retries bounded, so a region that does not answer is
noticed in seconds and the replicated store can read from the other one.

Objects written with an archive storage class (GLACIER, DEEP_ARCHIVE) cannot be read until
restored: `get` then asks S3 for a restore and raises BlockRestoring, which the API answers
with 503 and Retry-After (the class's usual restore time).
"""

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from backend.blockstore.base import BlockNotFound, BlockStore, StoreUnavailable, check_key
from backend.protocol.errors import BlockRestoring

POOL_CONNECTIONS = 32
CONNECT_TIMEOUT_S = 2.0
# Between two reads of the socket (not the whole transfer): S3 answers in well under a
# second, so an endpoint silent this long is down and the other region should answer.
READ_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 3  # one try and two retries, with botocore's jittered backoff
DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes
# Classes whose objects must be restored before a GET (GLACIER_IR reads instantly).
RESTORE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
STORAGE_CLASSES = frozenset({
    "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "REDUCED_REDUNDANCY",
    "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE",
})  # fmt: skip
RESTORE_DAYS = 7
# What a restore takes at the Standard tier: hours for GLACIER, up to 12 h for DEEP_ARCHIVE.
RESTORE_RETRY_S = {"GLACIER": 3 * 3600, "DEEP_ARCHIVE": 12 * 3600}
_OPTIONS = frozenset({"endpoint", "region", "storage_class"})
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class S3BlockStore(BlockStore):
    """Objects in one bucket under a prefix, written with one storage class."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        storage_class: str = "STANDARD",
    ) -> None:
        if storage_class not in STORAGE_CLASSES:
            raise ValueError(f"unknown S3 storage class {storage_class!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.storage_class = storage_class
        config = Config(
            region_name=region,
            max_pool_connections=POOL_CONNECTIONS,
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            # Path-style requests work on every S3 implementation and need no DNS per bucket.
            s3={"addressing_style": "path" if endpoint else "auto"},
        )
        session = boto3.session.Session()
        self.client = session.client("s3", endpoint_url=endpoint, config=config)
        # The start-up check tries once: a server that cannot reach its store says so at once.
        once = config.merge(Config(retries={"max_attempts": 1, "mode": "standard"}))
        self._probe = session.client("s3", endpoint_url=endpoint, config=once)
        # STANDARD is S3's default: sent only when it differs (not every S3 knows the header).
        self._class = {} if storage_class == "STANDARD" else {"StorageClass": storage_class}
        self._pool = ThreadPoolExecutor(POOL_CONNECTIONS, thread_name_prefix="s3")

    @property
    def needs_restore(self) -> bool:
        """Whether objects must be restored before they can be read (GLACIER, DEEP_ARCHIVE)."""
        return self.storage_class in RESTORE_CLASSES

    def __repr__(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"S3BlockStore(s3://{self.bucket}/{self.prefix}{where})"

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def check(self) -> None:
        """One HeadBucket: raise ValueError for a configuration the operator must fix (no
        such bucket, refused credentials), StoreUnavailable when the endpoint does not
        answer."""
        try:
            self._probe.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket"):
                raise ValueError(f"{self!r}: bucket {self.bucket!r} does not exist") from None
            if code in ("403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                raise ValueError(
                    f"{self!r}: the credentials were refused ({code}); set them in the "
                    "environment, ~/.aws/credentials or an instance role"
                ) from None
            raise StoreUnavailable(f"{self!r}: {code}: {_message(exc)}") from None
        except NoCredentialsError:
            raise ValueError(
                f"{self!r}: no AWS credentials found; set them in the environment, "
                "~/.aws/credentials or an instance role"
            ) from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"{self!r}: {exc}") from None

    def put(self, key: str, data: bytes) -> None:
        name = self._key(key)
        with _unavailable(self):
            self.client.put_object(Bucket=self.bucket, Key=name, Body=bytes(data), **self._class)

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Every object in parallel requests; raise the first failure once all are done."""
        for key, _data in items:
            check_key(key)
        futures = [self._pool.submit(self.put, key, data) for key, data in items]
        failures = [future.exception() for future in futures]
        for failure in failures:
            if failure is not None:
                raise failure

    def held(self, keys: Sequence[str], intact: Callable[[str, bytes], bool]) -> dict[str, int]:
        """The base class's check with its GETs in parallel requests, so a batch upload
        waits for about one round trip, not one per block."""

        def size(key: str) -> int | None:
            try:
                data = self.get(key)
            except BlockNotFound:
                return None
            return len(data) if intact(key, data) else None

        for key in keys:
            check_key(key)
        sizes = list(self._pool.map(size, keys))
        return {key: found for key, found in zip(keys, sizes, strict=True) if found is not None}

    def get(self, key: str) -> bytes:
        name = self._key(key)
        try:
            with _unavailable(self):
                answer = self.client.get_object(Bucket=self.bucket, Key=name)
                return answer["Body"].read()
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise BlockNotFound(key) from None
            if _code(exc) == "InvalidObjectState":
                raise self._restore(key, name) from None
            raise

    def prepare_reads(self, keys: Sequence[str]) -> None:
        """One HEAD per object (in parallel requests), and a restore asked for each one
        neither restored nor being restored, so a file's blocks restore together rather
        than one per attempt; BlockRestoring while any is not readable yet."""
        if not self.needs_restore or not keys:
            return
        waiting = [found for found in self._pool.map(self._readable_or_restore, keys) if found]
        if waiting:
            raise BlockRestoring(
                f"{len(waiting)} archived blocks are being restored", waiting[0].retry_after
            )

    def _readable_or_restore(self, key: str) -> BlockRestoring | None:
        name = self._key(key)
        try:
            with _unavailable(self):
                head = self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None  # the read itself reports it
            raise
        restored = 'ongoing-request="false"' in head.get("Restore", "")
        if head.get("StorageClass") not in RESTORE_CLASSES or restored:
            return None
        return self._restore(key, name)

    def _restore(self, key: str, name: str) -> BlockRestoring:
        """Ask for a restore of an archived object (again is harmless) and say how long."""
        try:
            with _unavailable(self):
                self.client.restore_object(
                    Bucket=self.bucket, Key=name, RestoreRequest={"Days": RESTORE_DAYS}
                )
        except ClientError as exc:
            if _code(exc) != "RestoreAlreadyInProgress":
                raise
        retry = RESTORE_RETRY_S.get(self.storage_class, BlockRestoring.DEFAULT_RETRY_S)
        return BlockRestoring(f"block {key} is archived and being restored", retry)

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: Sequence[str]) -> None:
        """DeleteObjects, 1000 keys per request; absent keys are not an error."""
        names = [self._key(key) for key in keys]
        for start in range(0, len(names), DELETE_BATCH):
            objects = [{"Key": name} for name in names[start : start + DELETE_BATCH]]
            with _unavailable(self):
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                )
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise StoreUnavailable(
                    f"{self!r}: {len(errors)} deletes failed, first {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message')}"
                )

    def exists(self, key: str) -> bool:
        name = self._key(key)
        try:
            with _unavailable(self):
                self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        return True

    def keys(self) -> Iterator[str]:
        """Every block key under the prefix (ListObjectsV2, 1000 per page)."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        with _unavailable(self):
            for page in pages:
                for entry in page.get("Contents", []):
                    name = entry["Key"][len(prefix) :]
                    if "/" not in name:
                        yield name


@contextmanager
def _unavailable(store: S3BlockStore) -> Iterator[None]:
    """Turn botocore's transport errors (no answer, timeouts) into StoreUnavailable; S3's
    own answers (ClientError) pass through for the caller to interpret."""
    try:
        yield
    except BotoCoreError as exc:
        raise StoreUnavailable(f"{store!r}: {exc}") from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)


def open_s3(url: str) -> S3BlockStore:
    """The store an `s3://BUCKET/PREFIX?endpoint=...&region=...&storage_class=...` URL names."""
    parts = urlsplit(url)
    if not parts.hostname or parts.username or parts.password or "@" in parts.netloc:
        raise ValueError(
            f"S3 URL {url!r} must be s3://BUCKET/PREFIX (credentials come from the "
            "environment, ~/.aws/credentials or an instance role, never the URL)"
        )
    options = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = set(options) - _OPTIONS
    if unknown or any(len(values) != 1 for values in options.values()):
        raise ValueError(
            f"S3 URL {url!r}: options are endpoint, region and storage_class, each once"
        )
    endpoint = options.get("endpoint", [None])[0]
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"S3 URL {url!r}: endpoint must be an http:// or https:// URL")
    return S3BlockStore(
        bucket=parts.netloc,
        prefix=parts.path,
        endpoint=endpoint,
        region=options.get("region", [None])[0],
        storage_class=options.get("storage_class", ["STANDARD"])[0].upper(),
    )
