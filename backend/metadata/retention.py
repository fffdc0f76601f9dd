"""Version retention: which revisions of a file are kept, and dropping the others.

A policy has three parts, as Time Machine and Drive do it: a cap on the revisions kept per
file, the longest history kept, and a thinning schedule of tiers `AGE:EVERY` (the default
`24h:all,7d:1h,30d:1d` keeps every revision younger than a day, then the newest of each
hour up to a week, then the newest of each day; older ones keep the last tier's spacing, up
to the cap and the age limit). Buckets are fixed in time (hour h holds [h, h+1)), so a
revision kept today is still the newest of its hour tomorrow.

Never dropped: the head of a live file (node.rev, what a read returns), revisions still
pending, and pinned ones (which count neither against the cap nor as anyone's bucket but
their own). A deleted file has no head, so its whole history ages out. Dropping a revision
releases its block references; blocks left at refcount 0 are the collector's
(backend/lifecycle/gc.py).
"""

import re
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, replace

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from backend.db.models import UPLOADED, Namespace, Node, Revision, RevisionBlock, User
from backend.db.models import RetentionPolicy as PolicyRow
from backend.metadata.txn import Database, Txn
from backend.protocol.errors import InvalidRequest, NotFound

DEFAULT_MAX_REVISIONS = 100
DEFAULT_THINNING = "24h:all,7d:1h,30d:1d"
FOREVER = -1  # a user's max_age_s meaning "no age limit" even if the server has one
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d{1,9}(?:\.\d{1,9})?)([smhdw]?)")
_NS = 10**9
_SWEEP_BATCH = 200


def parse_duration(text: str) -> float:
    """Seconds in `90`, `90s`, `15m`, `24h`, `7d`, `2w` (or `0.5h`: 1800)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise InvalidRequest(f"not a duration (like 90s, 15m, 24h, 7d, 2w): {text!r:.40}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass(frozen=True, slots=True)
class Tier:
    """Revisions younger than age_s are kept one per every_s (every one when 0)."""

    age_s: int
    every_s: int


def parse_thinning(text: str) -> tuple[Tier, ...]:
    """Tiers from `AGE:EVERY,...` (EVERY may be `all`); ages must grow; `none` is empty."""
    if text.strip().lower() in ("", "none"):
        return ()
    tiers: list[Tier] = []
    for part in text.split(","):
        age, sep, every = part.partition(":")
        if not sep:
            raise InvalidRequest(f"a thinning tier is AGE:EVERY, got {part!r:.40}")
        every_s = 0 if every.strip().lower() == "all" else round(parse_duration(every))
        tier = Tier(round(parse_duration(age)), every_s)
        if tiers and tier.age_s <= tiers[-1].age_s:
            raise InvalidRequest("thinning tiers must be given youngest first")
        tiers.append(tier)
    return tuple(tiers)


@dataclass(frozen=True, slots=True)
class Policy:
    max_revisions: int = DEFAULT_MAX_REVISIONS
    max_age_s: int | None = None  # None: no age limit
    thinning: tuple[Tier, ...] = parse_thinning(DEFAULT_THINNING)

    def __post_init__(self) -> None:
        if self.max_revisions < 1:
            raise InvalidRequest("a file keeps at least one revision")
        if self.max_age_s is not None and self.max_age_s < 0:
            raise InvalidRequest("the longest history kept cannot be negative")

    def with_row(self, row: PolicyRow | None) -> "Policy":
        """This (server) policy with a user's own settings laid over it."""
        if row is None:
            return self
        changes: dict = {}
        if row.max_revisions is not None:
            changes["max_revisions"] = row.max_revisions
        if row.max_age_s is not None:
            changes["max_age_s"] = None if row.max_age_s == FOREVER else row.max_age_s
        if row.thinning is not None:
            changes["thinning"] = parse_thinning(row.thinning)
        return replace(self, **changes)

    def to_json(self) -> dict:
        return {
            "max_revisions": self.max_revisions,
            "max_age_s": self.max_age_s,
            "thinning": ",".join(
                f"{t.age_s}s:{t.every_s}s" if t.every_s else f"{t.age_s}s:all"
                for t in self.thinning
            )
            or "none",
        }


def policy_of(session: Session, server: Policy, namespace_id: int) -> Policy:
    return server.with_row(session.get(PolicyRow, namespace_id))


@dataclass(frozen=True, slots=True)
class Version:
    """What the schedule needs to know of one revision."""

    id: int
    number: int
    created_ns: int
    uploaded: bool
    pinned: bool


def doomed(versions: Iterable[Version], head: int | None, now_ns: int, policy: Policy) -> list[int]:
    """The ids of the revisions the policy drops (head: the live file's node.rev, or None)."""
    kept: list[Version] = []
    drop: list[int] = []
    buckets: set[tuple[int, int]] = set()
    for version in sorted(versions, key=lambda v: v.number, reverse=True):
        protected = version.pinned or not version.uploaded or version.number == head
        bucket = _bucket(version, now_ns, policy)
        if protected:
            if not version.pinned and bucket is not None:
                buckets.add(bucket)
            if not version.pinned:
                kept.append(version)
            continue
        age_s = (now_ns - version.created_ns) / _NS
        if (policy.max_age_s is not None and age_s > policy.max_age_s) or bucket in buckets:
            drop.append(version.id)
            continue
        if bucket is not None:
            buckets.add(bucket)
        kept.append(version)
    droppable = [v for v in kept if v.uploaded and v.number != head]
    excess = len(kept) - policy.max_revisions
    drop.extend(v.id for v in droppable[::-1][: max(excess, 0)])  # the oldest first
    return drop


def _bucket(version: Version, now_ns: int, policy: Policy) -> tuple[int, int] | None:
    """(spacing, slot) of the revision's age tier; None where every revision is kept."""
    if not policy.thinning:
        return None
    age_s = (now_ns - version.created_ns) / _NS
    tier = next((t for t in policy.thinning if age_s < t.age_s), policy.thinning[-1])
    if tier.every_s == 0:
        return None
    every_ns = tier.every_s * _NS
    return tier.every_s, version.created_ns // every_ns


def prune_node(tx: Txn, node: Node, policy: Policy) -> list[int]:
    """Drop the node's revisions the policy does not keep; return their numbers."""
    query = select(
        Revision.id, Revision.number, Revision.created, Revision.status, Revision.pinned
    ).where(Revision.node_id == node.id)
    versions = [
        Version(i, number, created, status == UPLOADED, pinned)
        for i, number, created, status, pinned in tx.session.execute(query)
    ]
    head = None if node.deleted else node.rev
    ids = doomed(versions, head, tx.now_ns, policy)
    drop_revisions(tx, ids)
    numbers = {v.id: v.number for v in versions}
    return sorted(numbers[i] for i in ids)


def prune_revisions(tx: Txn, node: Node, keep: int) -> list[int]:
    """At a commit: drop the file's revisions older than its newest `keep` (the cap alone;
    the schedule is applied by the periodic sweep); return their numbers."""
    if node.head_rev <= keep:  # numbers run 1..head_rev: there are no more than keep
        return []
    query = (
        select(Revision.id, Revision.number, Revision.status)
        .where(Revision.node_id == node.id, Revision.pinned.is_(False))
        .order_by(Revision.number.desc())
        .offset(keep)
    )
    doomed_rows = [
        (revision_id, number)
        for revision_id, number, status in tx.session.execute(query)
        if status == UPLOADED and number != node.rev
    ]
    drop_revisions(tx, [revision_id for revision_id, _ in doomed_rows])
    return [number for _, number in doomed_rows]


def drop_revisions(tx: Txn, ids: list[int]) -> None:
    """Delete revisions with their block lists, releasing their block references."""
    if not ids:
        return
    hashes = select(RevisionBlock.hash, RevisionBlock.size).where(
        RevisionBlock.revision_id.in_(ids)
    )
    tx.refer([(block_hash, size) for block_hash, size in tx.session.execute(hashes)], -1)
    tx.session.execute(delete(RevisionBlock).where(RevisionBlock.revision_id.in_(ids)))
    tx.session.execute(delete(Revision).where(Revision.id.in_(ids)))


class Retention:
    """The server's policy, users' own policies, and the sweep that applies them."""

    def __init__(self, db: Database, server: Policy) -> None:
        self.db = db
        self.server = server
        self._caps: weakref.WeakKeyDictionary[Txn, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def cap(self, tx: Txn) -> int:
        """The revision cap of the transaction's drive, looked up once per transaction (a
        batch of commits asks once)."""
        with self._lock:
            known = self._caps.get(tx)
        if known is None:
            known = policy_of(tx.session, self.server, tx.namespace_id).max_revisions
            with self._lock:
                self._caps[tx] = known
        return known

    def policy(self, namespace_id: int) -> Policy:
        with self.db.read() as session:
            return policy_of(session, self.server, namespace_id)

    def set_policy(self, user_name: str, settings: dict[str, int | str | None]) -> Policy:
        """Lay a user's own settings (max_revisions, max_age_s, thinning; None: the
        server's) over the server's; checked by building the policy first."""
        with self.db.write_session() as session:
            namespace_id = session.scalar(
                select(Namespace.id)
                .join(User, User.id == Namespace.user_id)
                .where(User.name == user_name)
            )
            if namespace_id is None:
                raise NotFound(f"no such user: {user_name}")
            row = session.get(PolicyRow, namespace_id) or PolicyRow(namespace_id=namespace_id)
            for name, value in settings.items():
                setattr(row, name, value)
            policy = self.server.with_row(row)
            session.merge(row)
        return policy

    def sweep(self) -> int:
        """Apply every drive's policy to every file with history to lose; the revisions
        dropped."""
        with self.db.read() as session:
            namespaces = list(session.scalars(select(Namespace.id).order_by(Namespace.id)))
        return sum(self._sweep_drive(namespace_id) for namespace_id in namespaces)

    def _sweep_drive(self, namespace_id: int) -> int:
        query = (
            select(Node.id)
            .join(Revision, Revision.node_id == Node.id)
            .where(Node.namespace_id == namespace_id)
            .group_by(Node.id, Node.deleted)
            .having(or_(func.count(Revision.id) > 1, Node.deleted.is_(True)))
            .order_by(Node.id)
        )
        with self.db.read() as session:
            node_ids = list(session.scalars(query))
        dropped = 0
        for start in range(0, len(node_ids), _SWEEP_BATCH):
            with self.db.write(namespace_id) as tx:
                policy = policy_of(tx.session, self.server, namespace_id)
                for node_id in node_ids[start : start + _SWEEP_BATCH]:
                    dropped += len(prune_node(tx, tx.session.get(Node, node_id), policy))
        return dropped
