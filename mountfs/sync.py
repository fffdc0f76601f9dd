"""The sync engine: one trio task that replays the journal (in batches), pulls changes and
long-polls.

Replay and change application run in the same task, one after the other, so a server answer
is always folded into the mirror before the echo of that change is applied (no race between
"our mkdir returned id 10" and "the feed says id 10 exists"). The long poll is cancelled as
soon as the VFS journals something, so local changes leave within milliseconds; when the server
is unreachable the engine retries with bounded exponential backoff, and the mount keeps
working from the mirror meanwhile.
"""

import itertools
import logging

import trio

from backend.protocol.errors import CursorExpired, QuotaExceeded, Unauthorized
from cache.metadb import MetaDB
from mountfs.feed import Feed
from mountfs.quota import Usage
from mountfs.remote import RemoteDrive, ServerUnreachable
from mountfs.replay import Replayer

log = logging.getLogger(__name__)

POLL_SECONDS = 30
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
PAGE = 1000
PULL_PAGES = 50
# Journal entries replayed per request: enough that a tree of small files travels in a few
# dozen requests, few enough that one batch's blocks and answers stay small.
BATCH_ENTRIES = 256
# While the VFS keeps journaling (an untar, a cp -r, an rm -rf), a batch waits for more
# entries: until nothing new came for GATHER_QUIET, at most GATHER_MAX after it was taken up.
# A lone change leaves GATHER_QUIET later; a tree travels in batches of many entries, which
# costs both sides far less per entry than a batch of a few.
GATHER_QUIET = 0.005
GATHER_MAX = 0.1
# A run of deletions (`rm -rf`) gathers longer into larger batches, so that a folder's rmdir
# more often travels with the deletions below it and goes as one recursive delete
# (mountfs/replay.py): less work for the server. DELETIONS_BATCH stays within the server's
# operations per batch. Other entries never wait behind them.
DELETIONS = frozenset({"unlink", "rmdir"})
DELETIONS_BATCH = 1000
DELETIONS_GATHER_MAX = 1.0
# While the quota is full, uploads are tried again after this long (doubling up to the
# maximum), or as soon as the server's usage or the quota changes.
QUOTA_RETRY_FIRST, QUOTA_RETRY_MAX = 1.0, 10.0


class Wakeup:
    """Set by the VFS whenever it journals something; wakes the engine from its long poll."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = trio.Event()


class SyncEngine:
    def __init__(
        self,
        db: MetaDB,
        remote: RemoteDrive,
        feed: Feed,
        replayer: Replayer,
        wakeup: Wakeup,
        usage: Usage | None = None,
    ) -> None:
        self._db = db
        self._remote = remote
        self._feed = feed
        self._replayer = replayer
        self._wakeup = wakeup
        self.usage = usage or Usage()
        self.online = False
        self._quota_retry = QUOTA_RETRY_FIRST

    @property
    def has_cursor(self) -> bool:
        return self._db.get_state("cursor") is not None

    async def initial_sync(self) -> None:
        """Fill an empty mirror from the snapshot; later changes come from its cursor."""
        cursor, nodes = await self._snapshot()
        with self._db.transaction():
            self._feed.apply_all(nodes)
            self._db.set_state("cursor", str(cursor))

    async def _snapshot(self) -> tuple[int, list[dict]]:
        """Every live node of the drive, and the cursor to follow changes from."""
        after_id, cursor, nodes = 0, None, []
        while True:
            page = await self._remote.snapshot(after_id, PAGE)
            cursor = page["cursor"] if cursor is None else cursor
            nodes.extend(page["nodes"])
            if not page["has_more"] or not page["nodes"]:
                break
            after_id = page["nodes"][-1]["id"]
        return cursor, nodes

    async def resync(self) -> None:
        """The server trimmed its journal past our cursor (410): make the mirror the
        snapshot's tree. Nodes with pending local operations are left to the journal, as
        the feed always does; nodes the server no longer has go, like remote deletions."""
        log.warning("the server's change journal was trimmed past our cursor; re-syncing")
        cursor, nodes = await self._snapshot()
        present = {node["id"] for node in nodes}
        with self._db.transaction():
            self._feed.apply_all(nodes)
            gone = [rid for rid in self._db.attached_remote_ids() if rid not in present]
            self._feed.apply_all([{"id": rid, "deleted": True} for rid in gone])
            self._db.set_state("cursor", str(cursor))

    async def run(self) -> None:
        backoff = BACKOFF_FIRST
        refusal: QuotaExceeded | None = None
        while True:
            try:
                if refusal is not None:
                    await self._wait_for_space(refusal)
                    refusal = None
                if not self.has_cursor:
                    await self.initial_sync()
                await self.replay_all()
                self.usage.over = False
                await self._pull()
                await self.usage.refresh(self._remote)
                self.online = True
                backoff = BACKOFF_FIRST
                await self._wait_for_news()
                continue
            except QuotaExceeded as exc:
                refusal = exc
                continue
            except (ServerUnreachable, Unauthorized) as exc:
                if self.online:
                    log.warning("server unreachable, working offline: %s", exc)
                self.online = False
            except Exception:
                log.exception("sync failed; retrying")
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def replay_all(self) -> None:
        """Replay the journal until it is empty (raises when the server goes away)."""
        while (first := self._db.first_entry()) is not None:
            if first.op in DELETIONS:
                await self._gather(DELETIONS_BATCH, DELETIONS_GATHER_MAX)
                entries = self._db.first_entries(DELETIONS_BATCH)
                entries = list(itertools.takewhile(lambda e: e.op in DELETIONS, entries))
            else:
                await self._gather(BATCH_ENTRIES, GATHER_MAX)
                entries = self._db.first_entries(BATCH_ENTRIES)
            await self._replayer.replay(entries)

    async def _wait_for_space(self, refusal: QuotaExceeded) -> None:
        """The server refused an upload for the quota: keep following its changes, and
        return after the retry delay, or sooner when the usage or the quota changes (raises
        when the server goes away, like the rest of the cycle)."""
        if not self.usage.over:
            log.warning("the quota is full; uploads wait for space: %s", refusal)
            self._quota_retry = QUOTA_RETRY_FIRST
        self.usage.over = True
        deadline = trio.current_time() + self._quota_retry
        self._quota_retry = min(self._quota_retry * 2, QUOTA_RETRY_MAX)
        await self.usage.refresh(self._remote)
        refused_at = (self.usage.used, self.usage.quota)
        while trio.current_time() < deadline:
            await trio.sleep(min(QUOTA_RETRY_FIRST, deadline - trio.current_time()))
            await self._pull()
            await self.usage.refresh(self._remote)
            if (self.usage.used, self.usage.quota) != refused_at:
                return

    async def _gather(self, size: int, longest: float) -> None:
        """Wait while the journal is still growing and short of `size` entries, for at most
        `longest` seconds."""
        deadline = trio.current_time() + longest
        while trio.current_time() < deadline:
            self._wakeup.clear()
            with trio.move_on_after(GATHER_QUIET) as quiet:
                await self._wakeup.wait()
            if quiet.cancelled_caught or self._db.journal_length() >= size:
                return

    async def _pull(self) -> None:
        """Apply the changes since the cursor, PULL_PAGES pages per transaction. The feed
        lists each node as it was at every change; only a node's latest state is applied,
        because replaying the steps one by one would let a name's former holder (since
        deleted or moved) push out the local node that holds the name now."""
        cursor = int(self._db.get_state("cursor") or 0)
        more = True
        while more:
            latest: dict[int, dict] = {}
            for _ in range(PULL_PAGES):
                try:
                    page = await self._remote.changes(cursor, PAGE)
                except CursorExpired:  # the snapshot is newer than what this round read
                    await self.resync()
                    return
                for change in page["entries"]:
                    latest.pop(change["node"]["id"], None)  # keep the order of last changes
                    latest[change["node"]["id"]] = change["node"]
                cursor, more = page["cursor"], page["has_more"]
                if not more:
                    break
            with self._db.transaction():
                self._feed.apply_latest(list(latest.values()))
                self._db.set_state("cursor", str(cursor))

    async def _wait_for_news(self) -> None:
        """Return when the server has changes or the journal has work, whichever is first."""
        self._wakeup.clear()
        if self._db.first_entry() is not None:
            return
        cursor = int(self._db.get_state("cursor") or 0)
        failures: list[Exception] = []
        async with trio.open_nursery() as nursery:

            async def poll() -> None:
                try:
                    await self._remote.poll(cursor, POLL_SECONDS)
                except (ServerUnreachable, Unauthorized) as exc:
                    failures.append(exc)
                nursery.cancel_scope.cancel()

            async def local() -> None:
                await self._wakeup.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(poll)
            nursery.start_soon(local)
        if failures:
            raise failures[0]

    async def drain(self, seconds: float) -> bool:
        """Try to send what is pending before the mount exits; True when nothing is left."""
        with trio.move_on_after(seconds):
            try:
                await self.replay_all()
            except (ServerUnreachable, Unauthorized, QuotaExceeded) as exc:
                log.warning("pending changes stay in the journal for the next mount: %s", exc)
        left = self._db.journal_length()
        if left:
            log.info("%d pending operations kept for the next mount", left)
        return left == 0
