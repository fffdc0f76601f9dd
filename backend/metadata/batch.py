"""Many namespace operations in one write transaction, each with its own outcome.

A sync client replays its journal of local changes in order; one request and one
transaction (one fsync) per change was what bounded it. A batch applies the operations in
the order given in one write transaction of the drive, as if each had a SAVEPOINT of its
own: an operation that is refused is undone alone, the ones before it stay, and everything
that succeeded commits together with its change-journal entries (they share one savepoint
until one is refused: see `_Run`). Writers of the drive queue on the same lock as single
calls, so concurrent clients still see one serial order.

An operation may carry the client's own sequence number (`seq`, with the batch's `client`):
its answer is kept, and the same operation sent again (a batch retried after its answer was
lost) gets that answer back instead of being applied twice. Commits need none: their
commit_id already makes them idempotent.

With `stop_on_error` the batch ends at the first refused operation, and after a commit that
became a conflicted copy: a client replaying a journal then looks at the server's state
right after that step, before anything later in its journal changes it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, insert, select

from backend.db.models import BatchAnswer
from backend.metadata import staging
from backend.metadata.posix import link_in, mknod_in
from backend.metadata.retention import Retention
from backend.metadata.revisions import (
    check_commit,
    commit_once,
    listed,
    note_unused_commit_ids,
)
from backend.metadata.tree import (
    delete_in,
    mkdir_in,
    move_in,
    set_xattr_in,
    setattr_in,
    symlink_in,
)
from backend.metadata.txn import Database, Txn
from backend.metadata.types import BatchOp, CommitRequest, CommitResult, Principal
from backend.protocol.errors import CirrusError, InvalidRequest

MAX_BATCH_OPS = 1000
MAX_CLIENT = 64
# Answers a drive keeps over all its clients; past it, other clients' oldest go first (a
# client that made up a new id for every batch would otherwise pin rows forever).
MAX_KEPT_ANSWERS = 10 * MAX_BATCH_OPS
_ANSWER_TABLE = BatchAnswer.__table__
_INSERT_ANSWERS = insert(_ANSWER_TABLE)
_MINE = (_ANSWER_TABLE.c.namespace_id == bindparam("namespace")) & (
    _ANSWER_TABLE.c.client == bindparam("client")
)
_DROP_ANSWERS = delete(_ANSWER_TABLE).where(_MINE, _ANSWER_TABLE.c.seq < bindparam("first"))
_NEWEST_KEPT = (
    select(_ANSWER_TABLE.c.created)
    .where(_ANSWER_TABLE.c.namespace_id == bindparam("namespace"))
    .order_by(_ANSWER_TABLE.c.created.desc())
    .limit(1)
    .offset(MAX_KEPT_ANSWERS)
    .scalar_subquery()
)
_DROP_OLDEST = delete(_ANSWER_TABLE).where(
    _ANSWER_TABLE.c.namespace_id == bindparam("namespace"),
    _ANSWER_TABLE.c.client != bindparam("client"),
    _ANSWER_TABLE.c.created <= _NEWEST_KEPT,
)
_ANSWERS = select(_ANSWER_TABLE.c.seq, _ANSWER_TABLE.c.answer).where(
    _MINE, _ANSWER_TABLE.c.seq.in_(bindparam("seqs", expanding=True))
)


def _given_answers(tx: Txn, client: str | None, ops: list[BatchOp]) -> dict[int, dict]:
    """The answers already given to this client's operations in `ops`, after dropping its
    older ones (it sends in order, so it holds the answers to everything before)."""
    seqs = [op.seq for op in ops if op.seq is not None]
    if client is None or not seqs:
        return {}
    mine = {"namespace": tx.namespace_id, "client": client}
    tx.connection.execute(_DROP_ANSWERS, {**mine, "first": min(seqs)})
    return dict(tx.connection.execute(_ANSWERS, {**mine, "seqs": seqs}).tuples().all())


def _stage(db: Database, who: Principal, blocks: list) -> int | CirrusError | None:
    """The staged revision of a large commit (None for a small one), or why it was refused."""
    if len(blocks) <= staging.STAGE_ABOVE:
        return None
    try:
        return staging.stage(db, who, blocks)
    except CirrusError as exc:
        return exc


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one operation returned (as its single call would) or the error refusing it."""

    op: str
    value: Any = None
    error: CirrusError | None = None


Render = Callable[[Outcome], dict]


class Batches:
    def __init__(self, db: Database, retention: Retention) -> None:
        self.db = db
        self.retention = retention

    def apply(
        self,
        who: Principal,
        ops: list[BatchOp],
        render: Render,
        stop_on_error: bool,
        client: str | None,
    ) -> list[dict]:
        """Apply `ops` in order; the rendered answer of each operation tried (all of them,
        unless stop_on_error ended the batch early). An operation with a `seq` that this
        `client` sent before gets its first answer again and changes nothing."""
        if not 1 <= len(ops) <= MAX_BATCH_OPS:
            raise InvalidRequest(f"a batch holds 1 to {MAX_BATCH_OPS} operations")
        if client is not None and not 0 < len(client) <= MAX_CLIENT:
            raise InvalidRequest(f"client has 1 to {MAX_CLIENT} characters")
        commits = {
            index: check_commit(op.args["request"])
            for index, op in enumerate(ops)
            if op.kind == "commit"
        }
        staged = {index: _stage(self.db, who, blocks) for index, (_p, blocks) in commits.items()}
        try:
            return self._apply(who, ops, render, stop_on_error, client, commits, staged)
        finally:
            for revision in staged.values():
                if isinstance(revision, int):
                    staging.discard(self.db, who.namespace_id, revision)

    def _apply(
        self,
        who: Principal,
        ops: list[BatchOp],
        render: Render,
        stop_on_error: bool,
        client: str | None,
        checked: dict[int, tuple],
        staged: dict[int, int | CirrusError | None],
    ) -> list[dict]:
        commits = {index: (*checked[index], staged[index]) for index in checked}
        with self.db.write(who.namespace_id, who.author) as tx:
            tx.read_whole = len(ops)  # a folder's children cost at most what its lookups would
            given = _given_answers(tx, client, ops)
            ids = [op.args["request"].commit_id for op in ops if op.kind == "commit"]
            note_unused_commit_ids(tx, [i for i in ids if i is not None])
            tx.owned(list({
                b.hash: None for _p, blocks, ahead in commits.values() if ahead is None
                for b in blocks
            }))  # fmt: skip
            run = _Run(self, tx, who, ops, commits, given, render, stop_on_error)
            run.stretch(0, len(ops))
            if client is not None:
                rows = [
                    {"namespace_id": tx.namespace_id, "client": client, "seq": op.seq,
                     "answer": answer, "created": tx.now_ns}
                    for op, answer in zip(ops, run.answers, strict=False)
                    if op.seq is not None and op.seq not in given
                ]  # fmt: skip
                if rows:
                    tx.connection.execute(_INSERT_ANSWERS, rows)
                    mine = {"namespace": tx.namespace_id, "client": client}
                    tx.connection.execute(_DROP_OLDEST, mine)
        for index, result in run.awaiting.items():  # commits' answers are never kept
            run.answers[index] = render(Outcome("commit", listed(self.db, result)))
        return run.answers

    def one(self, tx: Txn, who: Principal, op: BatchOp, commit: tuple | None) -> Any:
        """Apply one operation as its single call would; its value, or CirrusError."""
        args = op.args
        attrs = args.get("attrs")
        match op.kind:
            case "mkdir":
                path, mode, mtime_ns = args["path"], args["mode"], args["mtime_ns"]
                return mkdir_in(tx, path, mode, mtime_ns, args["parents"], attrs)
            case "symlink":
                return symlink_in(tx, args["path"], args["target"], args["mtime_ns"], attrs)
            case "move":
                return move_in(tx, args["src"], args["dst"], args["mode"], attrs)
            case "delete":
                return delete_in(tx, args["path"], args["recursive"], attrs, args.get("only"))
            case "setattr":
                return setattr_in(tx, args["path"], args["mode"], args["mtime_ns"], attrs)
            case "xattr":
                return set_xattr_in(tx, args["path"], args["name"], args["value"], attrs)
            case "mknod":
                kind, mode, rdev = args["type"], args["mode"], args["rdev"]
                return mknod_in(tx, args["path"], kind, mode, rdev, args["mtime_ns"], attrs or {})
            case "link":
                return link_in(tx, args["src"], args["dst"], attrs or {})
            case "commit":
                request: CommitRequest = args["request"]
                parts, blocks, staged = commit
                if isinstance(staged, CirrusError):  # refused while its blocks were staged
                    raise staged
                return commit_once(tx, who, parts, request, blocks, self.retention.cap(tx), staged)
        raise InvalidRequest(f"unknown operation {op.kind!r}")


@dataclass(slots=True)
class _Run:
    """One batch being applied, optimistically: a stretch of operations shares one
    SAVEPOINT, since a savepoint per operation cost about as much as the operation. When
    one of them is refused, the stretch is undone and applied again up to it, the refused
    operation alone in a savepoint of its own (so what it changed before failing goes),
    and the rest as a new stretch: the same answers and changes as a savepoint each."""

    batches: Batches
    tx: Txn
    who: Principal
    ops: list[BatchOp]
    commits: dict[int, tuple]
    given: dict[int, dict]
    render: Render
    stop_on_error: bool
    answers: list[dict] = field(default_factory=list)  # answers[i] is ops[i]'s
    awaiting: dict[int, CommitResult] = field(default_factory=dict)  # listed after the batch

    def stretch(self, start: int, end: int) -> bool:
        """Apply ops[start:end], each answered in `answers`; True when stop_on_error ended
        the batch."""
        while start < end:
            kept = len(self.answers)
            index = start
            try:
                with self.tx.step():
                    for index in range(start, end):
                        if self._answer(index, self._applied(index)):
                            return True
                    return False
            except CirrusError:
                del self.answers[kept:]
                for index in [i for i in self.awaiting if i >= kept]:
                    del self.awaiting[index]
            # ops[start:index] went through before and do again; ops[index] was refused.
            if self.stretch(start, index):
                return True
            if self._answer(index, self._isolated(index)):
                return True
            start = index + 1
        return False

    def _applied(self, index: int) -> dict:
        """The answer of ops[index] applied in the current stretch (a refusal raises)."""
        op = self.ops[index]
        answer = self.given.get(op.seq)
        if answer is None:
            value = self.batches.one(self.tx, self.who, op, self.commits.get(index))
            self.tx.session.flush()  # its changes now: a failing write is its own refusal
            answer = self._rendered(index, value)
        return answer

    def _rendered(self, index: int, value: Any) -> dict:
        if isinstance(value, CommitResult) and value.awaiting is not None:
            self.awaiting[index] = value
        return self.render(Outcome(self.ops[index].kind, value))

    def _isolated(self, index: int) -> dict:
        """The answer of ops[index] applied in a savepoint of its own, refusal included."""
        op = self.ops[index]
        try:
            with self.tx.step():
                value = self.batches.one(self.tx, self.who, op, self.commits.get(index))
        except CirrusError as exc:
            return self.render(Outcome(op.kind, error=exc))
        return self._rendered(index, value)

    def _answer(self, index: int, answer: dict) -> bool:
        """Keep the answer; True when it ends the batch (stop_on_error)."""
        self.answers.append(answer)
        return self.stop_on_error and ("error" in answer or answer["body"].get("conflict"))
