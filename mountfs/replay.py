"""Replaying journal entries on the server, in order, many per request.

The paths in an entry are the ones the operation had when it happened locally, so replaying
in order meets the server in the state the next entry expects. Up to BATCH_ENTRIES
consecutive entries travel together: the blocks of every file among them first (small files
share one /blocks/missing and their /blocks/batch requests, mountfs/group_upload.py), then
one POST /v1/batch with an operation per entry, which the server applies in order and stops
at the first refusal or conflicted copy. The answers are then folded in entry by entry: each
entry's mirror update and its removal from the journal go together (a savepoint), and the
whole batch's settling is one commit of the mirror; the entries the server did not reach
stay in the journal for the next batch.

Retries are safe: every operation but a commit carries the entry's seq, so the server
answers an operation it applied before (a batch whose answer was lost) with its first answer
instead of applying it again; commits carry a `commit_id` derived from the entry and its
blocks, so a repeat returns the first answer.

`ServerUnreachable` (and a refused token, and a full quota) propagate: the sync engine waits
and retries the same entries. Any other refusal (a 4xx: another client took the name
meanwhile ...) is logged and the entry dropped, since sending it again would fail the same
way; then the server's state at the paths the entry touched is read back and the mirror
follows it, so the mount never shows something the server will never have.
"""

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import blake3
import trio

from backend.metadata.sharing import SHARE_XATTR
from backend.protocol.errors import (
    AlreadyExists,
    CirrusError,
    InvalidPathError,
    NotEmpty,
    NotFound,
    QuotaExceeded,
    Unauthorized,
)
from backend.protocol.paths import InvalidPath, split_path
from cache.blockcache import BlockCache
from cache.metadb import ROOT_INODE, JournalEntry, MetaDB
from mountfs.acknowledged import Source
from mountfs.feed import Feed, remote_fields
from mountfs.group_upload import upload_files
from mountfs.kernel import Kernel
from mountfs.remote import RemoteDrive, ServerUnreachable, refusal
from mountfs.upload import ContentChanged, Manifest, upload_blocks
from mountfs.vfs import VFS

log = logging.getLogger(__name__)

UPLOAD_ATTEMPTS = 3
CREATE_GRACE_SECONDS = 1.0
# An op's answer is kept under seq * TAG_SPACE + the number of setattrs it carries (fewer).
TAG_SPACE = 256
# Files up to this size share block uploads with the rest of their batch, up to GROUP_BYTES
# in all; a larger file streams its blocks on its own (mountfs/upload.py), one per batch.
GROUP_FILE_BYTES = 4 * 1024 * 1024
GROUP_BYTES = 32 * 1024 * 1024
# What a setattr entry may ask for (mountfs/vfs.py); ctime is carried by every operation.
_SETTABLE = ("mode", "mtime_ns", "uid", "gid", "atime_ns")


class Answer:
    """The server's result for one operation of a batch."""

    def __init__(self, result: dict) -> None:
        self._result = result

    def body(self) -> dict:
        """What the single call would have returned; raises what it would have raised."""
        error = refusal(self._result)
        if error is not None:
            raise error
        return self._result["body"]

    @property
    def created(self) -> bool:
        return self._result["status"] == 201


Settle = Callable[["Answer | None"], Awaitable[None]]


@dataclass(slots=True)
class Step:
    """One journal entry of a batch: the operation it sends (None: settled without the
    server) and how its answer is folded into the mirror."""

    entry: JournalEntry
    settle: Settle
    op: dict | None = None
    upload: "PendingUpload | None" = None
    folded: bool = False  # settled by another step's answer (see Batch.folded, _join)


@dataclass(slots=True)
class PendingUpload:
    """An upload entry waiting for its blocks: the content it reads and its generation."""

    source: Source
    generation: int
    grouped: bool  # small: its blocks travel with the other small files of the batch


class Batch:
    """The steps planned so far and what limits the batch (cut before what does not fit)."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.committing: set[int] = set()  # an inode commits at most once per batch
        self.folded: set[int] = set()  # seqs of setattrs that commits in the batch carry
        self.attempts: dict[int, dict] = {}  # entry args naming an attempt (commit, mkdir), by seq
        self.group_bytes = 0
        self.streaming = False  # a large file already streams its blocks in this batch

    @property
    def empty(self) -> bool:
        return not self.steps


class Replayer:
    """Sends journal entries to the server and folds the answers into the mirror."""

    def __init__(
        self,
        db: MetaDB,
        vfs: VFS,
        remote: RemoteDrive,
        blocks: BlockCache,
        kernel: Kernel,
        feed: Feed,
    ) -> None:
        self._db = db
        self._feed = feed
        self._vfs = vfs
        self._remote = remote
        self._blocks = blocks
        self._kernel = kernel
        self._limiter = trio.CapacityLimiter(2)
        self._one_by_one: set[int] = set()  # rmdirs whose joined delete the server refused

    async def replay(self, entries: list[JournalEntry]) -> None:
        """Replay a prefix of `entries` (at least the first) in one batch request."""
        batch = Batch()
        for entry in entries:
            step = await self._plan(entry, batch)
            if step is None:
                break
            batch.steps.append(step)
        self._join_deletions(batch)
        await self._send_blocks(batch)
        with self._db.transaction():  # before the batch is sent: see _plan_commit
            for seq, args in batch.attempts.items():
                self._db.set_entry_args(seq, args)
        ops = [step.op for step in batch.steps if step.op is not None]
        client = self._db.get_state("client_id") or ""
        results = await self._remote.batch(ops, client) if ops else []
        tried = iter(results)
        with _settled_together(self._db):
            for step in batch.steps:
                if step.folded:
                    continue
                answer = None
                if step.op is not None:
                    result = next(tried, None)
                    if result is None:  # the server stopped before it: it stays journaled
                        return
                    answer = Answer(result)
                await self._settle(step, answer)

    async def _settle(self, step: Step, answer: Answer | None) -> None:
        entry = step.entry
        log.debug("replay #%d %s inode %s %s", entry.seq, entry.op, entry.inode, entry.args)
        try:
            await step.settle(answer)
        except (ServerUnreachable, Unauthorized, QuotaExceeded):
            raise  # the entry stays: sent again later (once space is freed)
        except CirrusError as exc:
            log.warning("server refused %s %s: %s", entry.op, entry.args, exc)
            await self._reconcile(entry)

    async def _reconcile(self, entry: JournalEntry) -> None:
        """Drop a refused entry and make the mirror show what the server has at its paths
        (the source of a move first, so a node moved back frees its new name)."""
        paths = [entry.args[key] for key in ("src", "path", "dst") if key in entry.args]
        found = {path: await self._server_node(path) for path in paths}
        below = [await self._server_tree(path) for path in paths if self._comes_back(path, found)]
        with self._db.transaction():
            self._db.remove_entry(entry.seq)
            for path in paths:
                self._align(path, found[path])
            for nodes in below:
                self._feed.apply_all(nodes)
            for inode in (entry.inode, entry.other):
                if inode is not None:
                    self._vfs.collect(inode)

    def _comes_back(self, path: str, found: dict[str, dict | None]) -> bool:
        """Whether aligning `path` puts back a folder the mirror no longer has, in a folder
        it has: its content went with it (an rmdir the server refused because another
        client added something below), so the server's content below it comes back too."""
        server = found[path]
        if server is None or server["type"] != "dir" or self._db.at_path(path) is not None:
            return False
        return self._db.at_path(path.rsplit("/", 1)[0] or "/") is not None

    async def _server_tree(self, path: str) -> list[dict]:
        """Every node below a folder on the server, folders before their content."""
        nodes: list[dict] = []
        folders = [path]
        while folders:
            entries = await self._remote.list_dir(folders.pop())
            nodes.extend(entries)
            folders.extend(node["path"] for node in entries if node["type"] == "dir")
        return nodes

    async def _server_node(self, path: str) -> dict | None:
        try:
            return await self._remote.stat(path)
        except (ServerUnreachable, Unauthorized):
            raise
        except CirrusError:  # absent, or below something that is not a folder
            return None

    def _align(self, path: str, server: dict | None) -> None:
        """Local node at `path` ← the server's (none, or another node: the local one goes)."""
        local = self._db.at_path(path)
        stale = local is not None and (server is None or local.remote_id != server["id"])
        if stale and local.inode != ROOT_INODE and not self._db.has_pending(local.inode):
            self._kernel.forget_entry(local.parent, local.name)
            self._vfs.detach(local)
        if server is not None:
            self._feed.apply(server)

    def _done(self, entry: JournalEntry, folded: Iterable[int] = (), **updates: Any) -> None:
        """Remove a replayed entry and apply its answer; the `folded` entries (setattrs its
        operation carried) go with it."""
        with self._db.transaction():
            for seq in folded:
                self._db.remove_entry(seq)
            if updates and self._db.get(entry.inode) is not None:
                self._claim(entry.inode, updates.get("remote_id"))
                self._db.update(entry.inode, **updates)
            self._db.remove_entry(entry.seq)
            for inode in (entry.inode, entry.other):
                if inode is not None:
                    self._vfs.collect(inode)

    async def _done_locally(
        self, entry: JournalEntry, folded: list[int], _answer: Answer | None
    ) -> None:
        self._done(entry, folded)

    def _local(self, entry: JournalEntry, carried: list[int] | None = None, **kw: Any) -> Step:
        """A step settled without the server (with the setattrs a later upload `carried`)."""
        return Step(entry, partial(self._done_locally, entry, carried or []), **kw)

    def _setattrs_after(self, entry: JournalEntry) -> Iterator[JournalEntry]:
        """The setattr entries of the node that follow `entry` in the node's own order, up
        to its next entry of any other kind."""
        seq = entry.seq
        for _ in range(TAG_SPACE - 1):
            following = self._db.next_entry_for(entry.inode, seq)
            if following is None or following.op != "setattr" or following.inode != entry.inode:
                return
            yield following
            seq = following.seq

    def _foldable(self, entry: JournalEntry, sent: dict) -> list[int]:
        """The setattr entries of the same node right after `entry` that ask for nothing
        but the mode and mtime its operation carries (`tar` sets both on every file)."""
        folded: list[int] = []
        for following in self._setattrs_after(entry):
            if any(sent.get(key) != value for key, value in _asked(following).items()):
                break
            folded.append(following.seq)
        return folded

    def _merged(self, entry: JournalEntry, sent: dict, fixed: set[str]) -> dict:
        """`sent` (mode and mtime an operation sets; `fixed`: the keys a setattr asked for)
        with what the setattrs right after it ask for, up to one that asks for a key again
        with another value: an operation then carries its node's next setattrs (tar sets a
        folder's mtime and its mode in two calls)."""
        merged, fixed = dict(sent), set(fixed)
        for following in self._setattrs_after(entry):
            asked = _asked(following)
            if any(key in fixed and merged[key] != value for key, value in asked.items()):
                break
            merged.update(asked)
            fixed.update(asked)
        return merged

    def _fold(self, batch: Batch, entry: JournalEntry, sent: dict) -> set[int]:
        """Mark the setattrs that `entry`'s operation carries: they are not sent again."""
        folded = set(self._foldable(entry, sent))
        batch.folded |= folded
        for other in batch.steps:
            if other.entry.seq in folded:
                other.op, other.folded = None, True
        return folded

    def _claim(self, inode: int, remote_id: int | None) -> None:
        """Give `remote_id` to `inode`, detaching a stale local twin that holds it."""
        if remote_id is None:
            return
        holder = self._db.by_remote(remote_id)
        if holder is not None and holder.inode != inode:
            self._db.update(holder.inode, remote_id=None)
            if holder.parent is not None:
                self._kernel.forget_entry(holder.parent, holder.name)
            self._vfs.detach(holder)

    def _superseded(self, entry: JournalEntry) -> list[int] | None:
        """A create or upload followed by another upload of the same file can be skipped,
        with the setattrs between them (tar sets mode and mtime on the open file, before the
        close that journals the upload): that upload's commit carries the mirror's mode and
        mtime. The seqs of those setattrs; None when `entry` is not superseded."""
        if "commit_id" in entry.args:  # an attempt may have landed: settle it first
            return None
        between = [following.seq for following in self._setattrs_after(entry)]
        later = self._db.next_entry_for(entry.inode, between[-1] if between else entry.seq)
        return between if later is not None and later.op == "upload" else None

    def _join_deletions(self, batch: Batch) -> None:
        """Send a folder's rmdir and the deletions of everything below it right before it
        (`rm -rf` journals one per name) as one recursive delete naming every node they
        removed: the server then finds one path and fills one trash item instead of doing
        so for every name. Anything else the server holds there refuses it, and the entries
        go one by one the next time (`_settle_joined`)."""
        steps = batch.steps
        end = len(steps) - 1
        while end > 0:
            start = end
            if self._joinable(steps[end]):
                below = steps[end].entry.args["path"] + "/"
                while start > 0 and _deletes_below(steps[start - 1], below):
                    start -= 1
            ids = self._deleted_ids(steps[start : end + 1]) if start < end else None
            if ids is None:  # the folders inside may still go at once
                end -= 1
                continue
            self._join(steps[start:end], steps[end], ids)
            end = start - 1

    def _joinable(self, step: Step) -> bool:
        return (
            step.entry.op == "rmdir"
            and _sends_delete(step)
            and step.entry.seq not in self._one_by_one
        )

    def _deleted_ids(self, steps: list[Step]) -> list[int] | None:
        """The server's ids of the nodes these deletions removed; None when one has none
        (never sent), is a hard link's name, is a file that took another of its names, or
        is a share's mount (the server would refuse: what is below is the owner's)."""
        ids = []
        for step in steps:
            row = self._db.get(step.entry.inode)
            if row is None or row.remote_id is None or row.parent is not None or row.is_link:
                return None
            if SHARE_XATTR in row.xattrs:
                return None
            ids.append(row.remote_id)
        return ids

    def _join(self, below: list[Step], folder: Step, ids: list[int]) -> None:
        for step in below:
            step.op, step.folded = None, True
        # Its own tag (an rmdir carries no setattrs, so +1 is free): a joined delete the
        # server refused is not answered from that refusal when sent alone again.
        tag = folder.entry.seq * TAG_SPACE + 1
        folder.op = {**folder.op, "recursive": True, "only": ids, "seq": tag}
        folder.settle = partial(self._settle_joined, folder.entry, [s.entry for s in below])
        log.debug("deleting %s with %d names below it at once", folder.op["path"], len(below))

    async def _settle_joined(
        self, entry: JournalEntry, below: list[JournalEntry], answer: Answer | None
    ) -> None:
        try:
            answer.body()
        except NotFound:
            log.info("rmdir of %s: gone on the server", entry.args["path"])
        except NotEmpty:
            log.info("%s holds more on the server: deletions sent one by one", entry.args["path"])
            self._one_by_one.update(other.seq for other in [*below, entry] if other.op == "rmdir")
            return  # the server stopped there: every entry of the batch from here stays
        self._done(entry, [other.seq for other in below])
        for other in below:
            self._vfs.collect(other.inode)

    # -- planning: one method per journal operation -------------------------------------------

    async def _plan(self, entry: JournalEntry, batch: Batch) -> Step | None:
        """The step that replays `entry` in this batch; None to end the batch before it."""
        if entry.seq in batch.folded:
            return self._local(entry, folded=True)
        invalid = _invalid_path(entry)
        if invalid is not None:  # the server would refuse the whole batch: refuse it alone
            return Step(entry, partial(_refuse, invalid))
        return await getattr(self, f"_plan_{entry.op}")(entry, batch)

    def _posix(self, entry: JournalEntry) -> dict:
        """Owner and times an operation carries: the node's as the mirror has them now (a
        later change's values are final anyway), and for a change of names the instant it
        happened, so the server's folder times equal the ones the mount showed."""
        node = self._db.get(entry.inode)
        if node is not None and node.is_link and node.link_inode is not None:
            node = self._db.get(node.link_inode)
        attrs = {}
        if node is not None:
            values = {"uid": node.uid, "gid": node.gid, "atime_ns": node.atime_ns}
            attrs = {key: value for key, value in values.items() if value is not None}
            attrs["ctime_ns"] = node.ctime_ns
        if "at" in entry.args:
            attrs["ctime_ns"] = entry.args["at"]
        return attrs

    def _with_owner(self, entry: JournalEntry, sent: dict) -> dict:
        """`sent` (what a commit sets) with the owner and atime it carries from the mirror,
        so that the setattrs it folds are those asking for exactly these."""
        posix = self._posix(entry)
        return {**sent, **{key: posix[key] for key in ("uid", "gid", "atime_ns") if key in posix}}

    def _tagged(self, entry: JournalEntry, op: dict, carried: Iterable[int] = ()) -> dict:
        """`op` with the tag the server keeps its answer under: the entry's seq and how many
        setattrs after it the operation carries (they are the first ones that follow it, so
        the count names the operation). A resend that carries more than the attempt whose
        answer the server kept is then applied, not answered from that attempt, which would
        settle setattrs the server never received."""
        return {**self._posix(entry), **op, "seq": entry.seq * TAG_SPACE + len(set(carried))}

    async def _plan_mkdir(self, entry: JournalEntry, batch: Batch) -> Step:
        """A first attempt carries the folder's next setattrs. A folder that is there already
        (an earlier attempt made it and its answer was lost) keeps its attributes, so after a
        first attempt they go as their own operations, in their places: left for the next
        batch, they would come after what follows them in this one (a rename of the folder
        above, and the server would refuse them for a path that is gone)."""
        args = entry.args
        sent = self._merged(entry, {"mode": args["mode"], "mtime_ns": args["mtime_ns"]}, set())
        retry = bool(args.get("attempted"))
        carried = set() if retry else self._fold(batch, entry, sent)
        if not retry:
            batch.attempts[entry.seq] = {**args, "attempted": True}
        op = {"op": "mkdir", "path": args["path"], **sent, "parents": True}

        async def settle(answer: Answer | None) -> None:
            node = answer.body()
            folded = self._foldable(entry, _applied(node)) if answer.created and not retry else []
            self._done(entry, folded, remote_id=node["id"])

        return Step(entry, settle, self._tagged(entry, op, carried))

    def _settle_made(self, entry: JournalEntry, path: str) -> Settle:
        """Settling the making of a node at `path` (one already there is taken: an
        earlier attempt made it)."""

        async def settle(answer: Answer | None) -> None:
            try:
                node = answer.body()
            except AlreadyExists:
                node = await self._remote.stat(path)
            self._done(entry, remote_id=node["id"])

        return settle

    async def _plan_symlink(self, entry: JournalEntry, batch: Batch) -> Step:
        args = entry.args
        op = {"op": "symlink", "path": args["path"], "target": args["target"]}
        op["mtime_ns"] = args["mtime_ns"]
        return Step(entry, self._settle_made(entry, args["path"]), self._tagged(entry, op))

    async def _plan_rename(self, entry: JournalEntry, batch: Batch) -> Step:
        args = entry.args
        op = {"op": "move", "from": args["src"], "to": args["dst"], "mode": args["mode"]}

        async def settle(answer: Answer | None) -> None:
            try:
                answer.body()
            except NotFound:
                log.info("rename of %s: gone on the server", args["src"])
            self._done(entry)

        return Step(entry, settle, self._tagged(entry, op))

    async def _plan_unlink(self, entry: JournalEntry, batch: Batch) -> Step:
        async def settle(answer: Answer | None) -> None:
            with contextlib.suppress(NotFound):
                answer.body()
            self._done(entry)

        op = {"op": "delete", "path": entry.args["path"]}
        return Step(entry, settle, self._tagged(entry, op))

    _plan_rmdir = _plan_unlink

    async def _plan_mknod(self, entry: JournalEntry, batch: Batch) -> Step:
        args = entry.args
        op = {"op": "mknod", **{key: args[key] for key in ("path", "type", "mode", "rdev")}}
        op["mtime_ns"] = args["mtime_ns"]
        return Step(entry, self._settle_made(entry, args["path"]), self._tagged(entry, op))

    async def _plan_link(self, entry: JournalEntry, batch: Batch) -> Step:
        op = {"op": "link", "from": entry.args["src"], "to": entry.args["dst"]}
        return Step(entry, self._settle_made(entry, entry.args["dst"]), self._tagged(entry, op))

    async def _plan_setattr(self, entry: JournalEntry, batch: Batch) -> Step:
        asked = _asked(entry)
        sent = self._merged(entry, {"mode": None, "mtime_ns": None, **asked}, set(asked))
        carried = self._fold(batch, entry, sent)
        op = {"op": "setattr", "path": entry.args["path"]}
        op.update({key: value for key, value in sent.items() if value is not None})

        async def settle(answer: Answer | None) -> None:
            self._done(entry, self._foldable(entry, _applied(answer.body())))

        return Step(entry, settle, self._tagged(entry, op, carried))

    async def _plan_xattr(self, entry: JournalEntry, batch: Batch) -> Step:
        args = entry.args
        op = {"op": "xattr", "path": args["path"], "name": args["name"], "value": args["value"]}

        async def settle(answer: Answer | None) -> None:
            try:
                answer.body()
            except NotFound:
                if args["value"] is not None:
                    raise
            self._done(entry)

        return Step(entry, settle, self._tagged(entry, op))

    async def _plan_create(self, entry: JournalEntry, batch: Batch) -> Step | None:
        # A file still being written usually closes soon; its upload then supersedes this
        # entry, which saves a commit and spares other clients the sight of an empty file.
        if self._vfs.has_writers(entry.inode) and self._superseded(entry) is None:
            if not batch.empty:
                return None  # it waits at the head of the next batch
            with trio.move_on_after(CREATE_GRACE_SECONDS):
                while self._vfs.has_writers(entry.inode) and self._superseded(entry) is None:
                    await trio.sleep(0.02)
        if (between := self._superseded(entry)) is not None:
            return self._skipped(batch, entry, between)
        if not self._may_commit(entry, batch):
            return None
        args = entry.args
        sent = self._with_owner(entry, {"mode": args["mode"], "mtime_ns": args["mtime_ns"]})
        generation = self._vfs.generation(entry.inode)
        step = self._local(entry)
        await self._plan_commit(step, batch, Manifest(0, []), sent, None, generation)
        return step

    async def _plan_upload(self, entry: JournalEntry, batch: Batch) -> Step | None:
        if (between := self._superseded(entry)) is not None:
            return self._skipped(batch, entry, between)
        node = self._db.get(entry.inode)
        dirty = self._vfs.content.dirty
        if node is None or not node.dirty or not dirty.exists(node.inode):
            return self._local(entry)
        if not self._may_commit(entry, batch):
            return None
        source = self._vfs.acknowledged.source(node)
        grouped = node.size <= GROUP_FILE_BYTES
        if grouped and batch.group_bytes + node.size > GROUP_BYTES and not batch.empty:
            return None
        if not grouped and batch.streaming:
            return None
        batch.committing.add(entry.inode)
        generation = self._vfs.generation(entry.inode)
        upload = PendingUpload(source, generation, grouped)
        if grouped:
            batch.group_bytes += node.size
        else:
            batch.streaming = True
        return self._local(entry, upload=upload)

    def _skipped(self, batch: Batch, entry: JournalEntry, between: list[int]) -> Step:
        """A superseded entry: it and the setattrs up to the upload that supersedes it
        settle without the server."""
        batch.folded |= set(between)
        return self._local(entry, between)

    def _may_commit(self, entry: JournalEntry, batch: Batch) -> bool:
        """A node commits at most once per batch (the next commit's base is this one's
        answer), and an entry with an earlier attempt goes first: that attempt is settled
        on its own before anything else is sent."""
        if entry.inode in batch.committing:
            return False
        return batch.empty or "commit_id" not in entry.args

    # -- blocks and commits ---------------------------------------------------------------------

    async def _send_blocks(self, batch: Batch) -> None:
        """Upload the blocks of every file in the batch, then plan their commits."""
        uploads = [step for step in batch.steps if step.upload is not None]
        grouped = {
            step.entry.seq: (step.upload.source.path, step.upload.source.size)
            for step in uploads
            if step.upload.grouped
        }
        manifests = await upload_files(self._remote, self._blocks, grouped, self._limiter)
        for step in uploads:
            entry, upload = step.entry, step.upload
            manifest = manifests.get(entry.seq)
            generation = upload.generation
            if manifest is None or not self._vfs.acknowledged.intact(upload.source):
                uploaded = await self._upload_acknowledged(entry)
                if uploaded is None:
                    continue  # settled locally: a deletion or newer upload says what's next
                generation, manifest = uploaded
            node = self._db.get(entry.inode)
            if node is None:
                continue
            log.debug("upload #%d %s: base_rev %s", entry.seq, entry.args["path"], node.head_rev)
            sent = self._with_owner(entry, {"mode": node.mode, "mtime_ns": node.mtime_ns})
            await self._plan_commit(step, batch, manifest, sent, node.head_rev, generation)

    async def _plan_commit(
        self,
        step: Step,
        batch: Batch,
        manifest: Manifest,
        sent: dict,
        base_rev: int | None,
        generation: int,
    ) -> None:
        """Make `step` a commit of `manifest`, so that a lost answer (crash, cancelled
        unmount) never turns into a conflict with ourselves: the id of an attempt is recorded
        before it is sent (with the batch's other attempts, in one transaction), and a later
        try with other content first settles that attempt (the server repeats its answer if
        it landed) and then commits on top of it."""
        entry = step.entry
        batch.committing.add(entry.inode)
        path = entry.args["path"]
        hashes = [(name, size) for _offset, size, name in manifest.blocks]
        commit_id = self._commit_id(entry, hashes)
        previous = entry.args.get("commit_id")
        settle = partial(self._settle_commit, entry, generation, manifest.blocks)
        if previous is not None and previous != commit_id:
            answer = await self._remote.commit(
                path, base_rev, manifest.size, hashes, sent["mode"], sent["mtime_ns"], previous
            )
            if answer.get("conflict"):

                async def settle_earlier(_answer: Answer | None) -> None:
                    await self._committed(entry, answer, generation, manifest.blocks)

                step.settle = settle_earlier
                return
            # The attempt landed, and so may have what followed it in its batch (a move of
            # its folder): commit on top of that node where it is now, never at the entry's
            # old path (a commit there would create the moved folder again).
            base_rev, path = answer["rev"], answer.get("path", path)
        batch.attempts[entry.seq] = {**entry.args, "commit_id": commit_id}
        step.op = {
            **self._posix(entry),
            **{key: sent[key] for key in ("uid", "gid", "atime_ns") if key in sent},
            "op": "commit",
            "path": path,
            "base_rev": base_rev,
            "size": manifest.size,
            "mode": sent["mode"],
            "mtime_ns": sent["mtime_ns"],
            "commit_id": commit_id,
            "blocks": [{"hash": name, "size": size} for name, size in hashes],
        }
        step.settle = settle
        self._fold(batch, entry, sent)

    async def _settle_commit(
        self,
        entry: JournalEntry,
        generation: int,
        blocks: list,
        answer: Answer | None,
    ) -> None:
        await self._committed(entry, answer.body(), generation, blocks)

    async def _upload_acknowledged(self, entry: JournalEntry) -> tuple[int, Manifest] | None:
        """Send the blocks of the acknowledged content (mountfs/acknowledged.py): if the
        source changed during the upload, a preserved copy now exists, or a newer
        acknowledgement: try again. None when the file went away (a deletion or a newer
        acknowledgement says what comes next)."""
        acknowledged = self._vfs.acknowledged
        for attempt in range(UPLOAD_ATTEMPTS):
            node = self._db.get(entry.inode)
            if node is None:
                return None
            generation = self._vfs.generation(entry.inode)
            source = acknowledged.source(node)
            try:
                early = self._vfs.content.early.take(entry.inode)
                manifest = await upload_blocks(
                    self._remote, self._blocks, source.path, self._limiter, early, source.size
                )
                if acknowledged.intact(source):
                    return generation, manifest
            except FileNotFoundError:
                return None
            except ContentChanged:
                pass
            log.info("%s changed during upload (attempt %d)", entry.args["path"], attempt + 1)
            if self._superseded(entry) is not None:
                return None
            await trio.sleep(0.2)
        raise ServerUnreachable("the file keeps changing; upload postponed")

    def _commit_id(self, entry: JournalEntry, hashes: list[tuple[str, int]]) -> str:
        digest = blake3.blake3(f"{self._db.get_state('client_id')}:{entry.seq}".encode())
        for name, size in hashes:
            digest.update(f"{name}:{size},".encode())
        return digest.hexdigest()[:64]

    async def _committed(
        self, entry: JournalEntry, answer: dict, generation: int, blocks: list
    ) -> None:
        """Fold a commit's answer into the mirror; drop the dirty copy when it is safe."""
        log.debug("%s #%d %s: rev %s", entry.op, entry.seq, entry.args["path"], answer["rev"])
        if answer.get("conflict"):
            await self._conflicted(entry, answer)
            return
        node = answer["node"]
        inode = entry.inode
        clean = self._vfs.generation(inode) == generation and self._settled(entry)
        # The acknowledged content is now revision `rev`: a crash recovery can go back to it.
        updates = {"remote_id": node["id"], "head_rev": answer["rev"], "rev": answer["rev"]}
        if clean:
            updates.update(size=node["size"], dirty=0, modified=0)
        last = self._db.next_entry_for(inode, entry.seq) is None
        with self._db.transaction():
            self._db.put_blocklist(node["id"], answer["rev"], [tuple(b) for b in blocks])
            self._done(entry, self._foldable(entry, _applied(node)), **updates)
        if clean:
            self._db.after_commit(partial(self._drop_dirty_copy, inode, blocks))
        elif last:
            self._db.after_commit(partial(self._vfs.content.dirty.drop_preserved, inode))

    def _drop_dirty_copy(self, inode: int, blocks: list) -> None:
        """A committed dirty copy goes; that of a one-block file becomes the block in the
        block cache, by a rename (the upload left it out of the cache for this:
        mountfs/group_upload.py)."""
        dirty = self._vfs.content.dirty
        if len(blocks) != 1:
            dirty.remove(inode)
            return
        _offset, size, name = blocks[0]
        dirty.remove(inode, keep=partial(self._blocks.adopt, name, size))

    def _settled(self, entry: JournalEntry) -> bool:
        """Whether the dirty copy may go: no handle, no change under way (a truncation holds
        the content lock), nothing journaled after this entry."""
        return (
            self._db.get(entry.inode) is not None
            and not self._vfs.has_handles(entry.inode)
            and not self._vfs.content.lock(entry.inode).locked()
            and self._db.next_entry_for(entry.inode, entry.seq) is None
        )

    async def _conflicted(self, entry: JournalEntry, answer: dict) -> None:
        """Our version became a conflicted copy: show the server's version at our path."""
        log.warning("conflict on %s: our version is %s", entry.args["path"], answer["path"])
        inode = entry.inode
        try:
            server = await self._remote.stat(entry.args["path"])
        except NotFound:
            self._done(entry, head_rev=None, conflict=1)
            return
        if not self._settled(entry):
            self._done(entry, remote_id=server["id"], head_rev=server["head_rev"], conflict=1)
            return
        self._done(entry, dirty=0, conflict=1, **remote_fields(server))
        self._db.after_commit(partial(self._vfs.content.dirty.remove, inode))
        self._vfs.stale.add(inode)
        self._kernel.forget_inode(inode)


class _EndGroupOnYield(trio.abc.Instrument):
    """Commits the mirror's open group as soon as `task` yields to the scheduler, before
    any other task (a FUSE request) can run and find its changes in an uncommitted group."""

    def __init__(self, db: MetaDB, task: trio.lowlevel.Task) -> None:
        self._db = db
        self._task = task

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self._task:
            self._db.end_group()


@contextlib.contextmanager
def _settled_together(db: MetaDB) -> Iterator[None]:
    """Settle a batch's answers in one commit of the mirror instead of one per entry, for
    as long as settling runs without yielding (a settle that asks the server something
    ends the group: the entries after it commit one by one). A crash loses only settled
    answers, which the journal sends again and the server answers from its record."""
    ender = _EndGroupOnYield(db, trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(ender)
    try:
        with db.group():
            yield
    finally:
        # Gone already if a commit in its hook failed: trio drops an instrument that raises.
        with contextlib.suppress(KeyError):
            trio.lowlevel.remove_instrument(ender)


def _invalid_path(entry: JournalEntry) -> CirrusError | None:
    """Why a path of the entry can never be sent (a folder moved below a longer path made
    one too long), if it cannot."""
    for key in ("path", "src", "dst"):
        if key in entry.args:
            try:
                split_path(entry.args[key])
            except InvalidPath as exc:
                return InvalidPathError(str(exc))
    return None


def _sends_delete(step: Step) -> bool:
    return step.op is not None and not step.folded and step.op["op"] == "delete"


def _deletes_below(step: Step, prefix: str) -> bool:
    """Whether `step` sends the deletion of a name below the folder path `prefix`."""
    deletion = step.entry.op in ("unlink", "rmdir") and _sends_delete(step)
    return deletion and step.entry.args["path"].startswith(prefix)


async def _refuse(error: CirrusError, _answer: Answer | None) -> None:
    raise error


def _applied(node: dict) -> dict:
    """The attributes the server's answer says a node has: what settles a setattr (the
    values an operation sent may not be the ones applied, e.g. when the server repeats the
    answer of an earlier attempt)."""
    applied = {"mode": node["mode"] & 0o7777, "mtime_ns": node["mtime_ns"]}
    return {**applied, **{key: node.get(key) for key in ("uid", "gid", "atime_ns")}}


def _asked(entry: JournalEntry) -> dict:
    """The attributes a setattr entry asks for (the keys it leaves alone are absent)."""
    return {key: entry.args[key] for key in _SETTABLE if entry.args.get(key) is not None}
