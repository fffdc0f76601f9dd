"""Quotas: what a user's drive counts against the limit an admin set, and the refusals.

The rule: a drive uses the plaintext size of every distinct block that some revision of it
names (current files, older revisions and the trash alike). A block counts once however
many of the drive's files and revisions share it, and in full for every user who has it,
however many other users share it: deduplication across users saves the server space but
earns nobody quota. namespace_refs counts, per drive and hash, the block-list rows naming
it; write_references keeps it and namespaces.used_bytes true in the transaction that
changes the references, so the usage is exact and costs no scan.

A commit that would take the drive past its quota is refused (QuotaExceeded, 507
quota_exceeded) before anything is written; so is an upload of blocks the drive has no
revision naming yet, counted at the size of their compressed frames (the commit that names
them counts their exact size). A commit naming only blocks the drive already counts always
passes: moving, restoring or re-committing known content never needs more space. Space is
freed by purging from the trash (or by revisions pruned away).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from backend.db.engine import insert_ignore
from backend.db.models import Namespace, NamespaceRef, User
from backend.metadata.types import BlockRef, Principal
from backend.protocol.errors import QuotaExceeded

if TYPE_CHECKING:  # txn.py counts usage through blockrefs.write_references
    from backend.metadata.txn import Database, Txn

_IN_BATCH = 500
_REFS = NamespaceRef.__table__
_KNOWN = select(_REFS.c.hash).where(
    _REFS.c.namespace_id == bindparam("namespace"),
    _REFS.c.hash.in_(bindparam("hashes", expanding=True)),
)
_COUNT = (
    update(_REFS)
    .where(_REFS.c.namespace_id == bindparam("namespace"), _REFS.c.hash == bindparam("counted"))
    .values(refs=_REFS.c.refs + bindparam("change"))
)
_QUOTA = "quota"  # Txn.facts key: the owner's quota, looked up once per transaction
_ADDED = "quota_added"  # Txn.facts key: hashes this transaction's commits counted as new


def known_hashes(session: Session, namespace_id: int, hashes: list[str]) -> set[str]:
    """The subset of hashes some revision of the drive names."""
    known: set[str] = set()
    for start in range(0, len(hashes), _IN_BATCH):
        params = {"namespace": namespace_id, "hashes": hashes[start : start + _IN_BATCH]}
        known.update(session.scalars(_KNOWN, params))
    return known


def count_usage(tx: Txn, net: Counter[str], sizes: dict[str, int]) -> None:
    """Apply a transaction's net reference changes per hash to the drive's counts and its
    used_bytes (called by write_references, with the sizes of every hash in `net`)."""
    changed = sorted(h for h, count in net.items() if count)
    if not changed:
        return
    before: dict[str, int] = {}
    for start in range(0, len(changed), _IN_BATCH):
        query = select(_REFS.c.hash, _REFS.c.refs).where(
            _REFS.c.namespace_id == tx.namespace_id,
            _REFS.c.hash.in_(changed[start : start + _IN_BATCH]),
        )
        before.update(tx.session.execute(query).all())
    insert_ignore(tx.session, NamespaceRef, [
        {"namespace_id": tx.namespace_id, "hash": h, "refs": 0, "size": sizes[h]}
        for h in changed if h not in before
    ])  # fmt: skip
    before = {h: before.get(h, 0) for h in changed}
    tx.connection.execute(_COUNT, [
        {"namespace": tx.namespace_id, "counted": h, "change": net[h]} for h in changed
    ])  # fmt: skip
    gone = [h for h in changed if before[h] + net[h] <= 0]
    for start in range(0, len(gone), _IN_BATCH):
        tx.session.execute(
            delete(NamespaceRef).where(
                NamespaceRef.namespace_id == tx.namespace_id,
                NamespaceRef.hash.in_(gone[start : start + _IN_BATCH]),
            )
        )
    gained = sum(sizes[h] for h in changed if before[h] <= 0 < before[h] + net[h])
    tx.namespace.used_bytes += gained - sum(sizes[h] for h in gone if before[h] > 0)


def check_commit(tx: Txn, blocks: list[BlockRef]) -> None:
    """Refuse a commit whose blocks new to the drive would take it past its quota."""
    quota = _quota(tx)
    if quota is None:
        return
    added: dict[str, int] = tx.facts.setdefault(_ADDED, {})
    sizes = {b.hash: b.size for b in blocks if b.hash not in added}
    known = known_hashes(tx.session, tx.namespace_id, list(sizes))
    new = {h: size for h, size in sizes.items() if h not in known}
    used = tx.namespace.used_bytes + sum(added.values())
    if new and used + sum(new.values()) > quota:
        raise QuotaExceeded(_over(used, sum(new.values()), quota))
    added.update(new)


def _quota(tx: Txn) -> int | None:
    if _QUOTA not in tx.facts:
        query = select(User.quota).join(Namespace, Namespace.user_id == User.id)
        tx.facts[_QUOTA] = tx.session.scalar(query.where(Namespace.id == tx.namespace_id))
    return tx.facts[_QUOTA]


def _over(used: int, adding: int, quota: int) -> str:
    return f"the quota of {quota} bytes is used up: {used} used, {adding} more needed"


class Quotas:
    def __init__(self, db: Database) -> None:
        self.db = db

    def usage(self, who: Principal) -> tuple[int, int | None]:
        """(bytes used, quota or None)."""
        with self.db.read() as session:
            query = (
                select(Namespace.used_bytes, User.quota)
                .join(User, User.id == Namespace.user_id)
                .where(Namespace.id == who.namespace_id)
            )
            used, quota = session.execute(query).one()
        return used, quota

    def check_upload(self, who: Principal, blocks: list[tuple[str, int]]) -> None:
        """Refuse blocks (hash, bytes) new to the drive that would take it past its quota."""
        used, quota = self.usage(who)
        if quota is None:
            return
        with self.db.read() as session:
            known = known_hashes(session, who.namespace_id, [h for h, _size in blocks])
        adding = sum(size for h, size in dict(blocks).items() if h not in known)
        if adding and used + adding > quota:
            raise QuotaExceeded(_over(used, adding, quota))

    def check_size(self, who: Principal, size: int) -> None:
        """Refuse a whole-file upload of `size` bytes that could not fit (resumable start)."""
        used, quota = self.usage(who)
        if quota is not None and size and used + size > quota:
            raise QuotaExceeded(_over(used, size, quota))

    def set_quota(self, name: str, quota: int | None) -> bool:
        """Set (None: remove) a user's quota; False when there is no such user."""
        with self.db.write_session() as session:
            changed = session.execute(update(User).where(User.name == name).values(quota=quota))
            return changed.rowcount == 1
