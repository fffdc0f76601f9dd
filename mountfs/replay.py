"""Replaying journal entries on the server, one at a time, in order.

The paths in an entry are the ones the operation had when it happened locally, so replaying
in order meets the server in the state the next entry expects. Each entry's mirror update and
its removal from the journal commit together. Retries are safe: mkdir asks for `parents`
(an existing folder is a success), deletes of what is gone succeed, and commits carry a
`commit_id` derived from the entry and its blocks, so a repeat returns the first answer.

`ServerUnreachable` (and a refused token) propagate: the sync engine waits and retries the
same entry. Any other refusal (a 4xx: another client took the name meanwhile ...) is logged
and the entry dropped, since sending it again would fail the same way; then the server's state
at the paths the entry touched is read back and the mirror follows it, so the mount never
shows something the server will never have.
"""

import base64
import contextlib
import logging
from typing import Any

import blake3
import trio

from backend.protocol.errors import AlreadyExists, CirrusError, NotFound, Unauthorized
from cache.blockcache import BlockCache
from cache.metadb import ROOT_INODE, JournalEntry, MetaDB
from mountfs.feed import Feed, remote_fields
from mountfs.kernel import Kernel
from mountfs.remote import RemoteDrive, ServerUnreachable
from mountfs.upload import ContentChanged, Manifest, upload_blocks
from mountfs.vfs import VFS

log = logging.getLogger(__name__)

UPLOAD_ATTEMPTS = 3
CREATE_GRACE_SECONDS = 1.0


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

    async def replay(self, entry: JournalEntry) -> None:
        handler = getattr(self, f"_{entry.op}")
        log.debug("replay #%d %s inode %s %s", entry.seq, entry.op, entry.inode, entry.args)
        try:
            await handler(entry)
        except (ServerUnreachable, Unauthorized):
            raise
        except CirrusError as exc:
            log.warning("server refused %s %s: %s", entry.op, entry.args, exc)
            await self._reconcile(entry)

    async def _reconcile(self, entry: JournalEntry) -> None:
        """Drop a refused entry and make the mirror show what the server has at its paths
        (the source of a move first, so a node moved back frees its new name)."""
        paths = [entry.args[key] for key in ("src", "path", "dst") if key in entry.args]
        found = {path: await self._server_node(path) for path in paths}
        with self._db.transaction():
            self._db.remove_entry(entry.seq)
            for path in paths:
                self._align(path, found[path])
            for inode in (entry.inode, entry.other):
                if inode is not None:
                    self._vfs.collect(inode)

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

    def _done(self, entry: JournalEntry, sent: dict | None = None, **updates: Any) -> None:
        """Remove a replayed entry and apply its answer; `sent` (mode and mtime a commit
        carried) also settles the setattr entries right after it that asked for the same."""
        with self._db.transaction():
            if sent is not None:
                self._fold_setattrs(entry, sent)
            if updates and self._db.get(entry.inode) is not None:
                self._claim(entry.inode, updates.get("remote_id"))
                self._db.update(entry.inode, **updates)
            self._db.remove_entry(entry.seq)
            for inode in (entry.inode, entry.other):
                if inode is not None:
                    self._vfs.collect(inode)

    def _fold_setattrs(self, entry: JournalEntry, sent: dict) -> None:
        seq = entry.seq
        while (following := self._db.next_entry_for(entry.inode, seq)) is not None:
            if following.op != "setattr" or following.inode != entry.inode:
                return
            asked = {key: following.args.get(key) for key in ("mode", "mtime_ns")}
            if any(value is not None and sent[key] != value for key, value in asked.items()):
                return
            self._db.remove_entry(following.seq)
            seq = following.seq

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

    def _superseded(self, entry: JournalEntry) -> bool:
        """A create or upload followed by another upload of the same file can be skipped."""
        if "commit_id" in entry.args:  # an attempt may have landed: settle it first
            return False
        later = self._db.next_entry_for(entry.inode, entry.seq)
        return later is not None and later.op == "upload"

    # -- one method per journal operation -----------------------------------------------------

    async def _mkdir(self, entry: JournalEntry) -> None:
        args = entry.args
        node = await self._remote.mkdir(args["path"], args["mode"], args["mtime_ns"], parents=True)
        self._done(entry, remote_id=node["id"])

    async def _symlink(self, entry: JournalEntry) -> None:
        args = entry.args
        try:
            node = await self._remote.symlink(args["path"], args["target"], args["mtime_ns"])
        except AlreadyExists:
            node = await self._remote.stat(args["path"])
        self._done(entry, remote_id=node["id"])

    async def _rename(self, entry: JournalEntry) -> None:
        args = entry.args
        try:
            await self._remote.move(args["src"], args["dst"], args["mode"])
        except NotFound:
            log.info("rename of %s: gone on the server", args["src"])
        self._done(entry)

    async def _unlink(self, entry: JournalEntry) -> None:
        with contextlib.suppress(NotFound):
            await self._remote.delete(entry.args["path"])
        self._done(entry)

    _rmdir = _unlink

    async def _setattr(self, entry: JournalEntry) -> None:
        args = entry.args
        await self._remote.setattr(args["path"], args.get("mode"), args.get("mtime_ns"))
        self._done(entry)

    async def _xattr(self, entry: JournalEntry) -> None:
        args = entry.args
        value = None if args["value"] is None else base64.b64decode(args["value"])
        try:
            await self._remote.set_xattr(args["path"], args["name"], value)
        except NotFound:
            if value is not None:
                raise
        self._done(entry)

    async def _create(self, entry: JournalEntry) -> None:
        # A file still being written usually closes soon; its upload then supersedes this
        # entry, which saves a commit and spares other clients the sight of an empty file.
        with trio.move_on_after(CREATE_GRACE_SECONDS):
            while self._vfs.has_writers(entry.inode) and not self._superseded(entry):
                await trio.sleep(0.02)
        if self._superseded(entry):
            self._done(entry)
            return
        args = entry.args
        answer = await self._commit(entry, 0, [], args["mode"], args["mtime_ns"], None)
        sent = {"mode": args["mode"], "mtime_ns": args["mtime_ns"]}
        await self._committed(entry, answer, self._vfs.generation(entry.inode), [], sent)

    async def _upload(self, entry: JournalEntry) -> None:
        node = self._db.get(entry.inode)
        dirty = self._vfs.content.dirty
        if (
            self._superseded(entry)
            or node is None
            or not node.dirty
            or not dirty.exists(node.inode)
        ):
            self._done(entry)
            return
        uploaded = await self._upload_acknowledged(entry)
        if uploaded is None:
            self._done(entry)
            return
        generation, manifest = uploaded
        node = self._db.get(entry.inode)
        if node is None:
            self._done(entry)
            return
        hashes = [(name, size) for _offset, size, name in manifest.blocks]
        log.debug("upload #%d %s: base_rev %s", entry.seq, entry.args["path"], node.head_rev)
        answer = await self._commit(
            entry, manifest.size, hashes, node.mode, node.mtime_ns, node.head_rev
        )
        sent = {"mode": node.mode, "mtime_ns": node.mtime_ns}
        await self._committed(entry, answer, generation, manifest.blocks, sent)

    async def _upload_acknowledged(self, entry: JournalEntry) -> tuple[int, Manifest] | None:
        """Send the blocks of the acknowledged content: the preserved copy when the file was
        changed again since, else the dirty copy, which must then not change during the
        upload (a change means a preserved copy now exists: try again with it). None when
        the file went away (a deletion or a newer acknowledgement says what comes next)."""
        dirty = self._vfs.content.dirty
        for attempt in range(UPLOAD_ATTEMPTS):
            generation = self._vfs.generation(entry.inode)
            preserved = dirty.has_preserved(entry.inode)
            source = dirty.preserved_path(entry.inode) if preserved else dirty.path(entry.inode)
            try:
                manifest = await upload_blocks(self._remote, self._blocks, source, self._limiter)
                if preserved or self._vfs.generation(entry.inode) == generation:
                    return generation, manifest
            except FileNotFoundError:
                return None
            except ContentChanged:
                pass
            log.info("%s changed during upload (attempt %d)", entry.args["path"], attempt + 1)
            if self._superseded(entry):
                return None
            await trio.sleep(0.2)
        raise ServerUnreachable("the file keeps changing; upload postponed")

    async def _commit(
        self,
        entry: JournalEntry,
        size: int,
        hashes: list[tuple[str, int]],
        mode: int,
        mtime_ns: int,
        base_rev: int | None,
    ) -> dict:
        """Commit so that a lost answer (crash, cancelled unmount) never turns into a conflict
        with ourselves: the id of an attempt is recorded before it is sent, and a later try
        with other content first settles that attempt (the server repeats its answer if it
        landed) and then commits on top of the revision it made."""
        path = entry.args["path"]
        commit_id = self._commit_id(entry, hashes)
        previous = entry.args.get("commit_id")
        if previous is not None and previous != commit_id:
            answer = await self._remote.commit(
                path, base_rev, size, hashes, mode, mtime_ns, previous
            )
            if answer.get("conflict"):
                return answer
            base_rev = answer["rev"]
        with self._db.transaction():
            self._db.set_entry_args(entry.seq, {**entry.args, "commit_id": commit_id})
        return await self._remote.commit(path, base_rev, size, hashes, mode, mtime_ns, commit_id)

    def _commit_id(self, entry: JournalEntry, hashes: list[tuple[str, int]]) -> str:
        digest = blake3.blake3(f"{self._db.get_state('client_id')}:{entry.seq}".encode())
        for name, size in hashes:
            digest.update(f"{name}:{size},".encode())
        return digest.hexdigest()[:64]

    async def _committed(
        self, entry: JournalEntry, answer: dict, generation: int, blocks: list, sent: dict
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
        self._db.put_blocklist(node["id"], answer["rev"], [tuple(b) for b in blocks])
        if clean:
            updates.update(size=node["size"], dirty=0, modified=0)
        last = self._db.next_entry_for(inode, entry.seq) is None
        self._done(entry, sent, **updates)
        if clean:
            self._vfs.content.dirty.remove(inode)
        elif last:
            self._vfs.content.dirty.drop_preserved(inode)

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
        self._vfs.content.dirty.remove(inode)
        self._vfs.stale.add(inode)
        self._kernel.forget_inode(inode)
