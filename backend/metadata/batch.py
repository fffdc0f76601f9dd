"""Many namespace operations in one write transaction, each with its own outcome.

A sync client replays its journal of local changes in order; one request and one
transaction (one fsync) per change was what bounded it. A batch applies the operations in
the order given, each in a SAVEPOINT of one write transaction of the drive: an operation
that is refused is undone alone, the ones before it stay, and everything that succeeded
commits together with its change-journal entries. Writers of the drive queue on the same
lock as single calls, so concurrent clients still see one serial order.

An operation may carry the client's own sequence number (`seq`, with the batch's `client`):
its answer is kept, and the same operation sent again (a batch retried after its answer was
lost) gets that answer back instead of being applied twice. Commits need none: their
commit_id already makes them idempotent.

With `stop_on_error` the batch ends at the first refused operation, and after a commit that
became a conflicted copy: a client replaying a journal then looks at the server's state
right after that step, before anything later in its journal changes it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from backend.db.models import BatchAnswer
from backend.metadata.revisions import check_commit, commit_once, note_unused_commit_ids
from backend.metadata.tree import (
    delete_in,
    mkdir_in,
    move_in,
    set_xattr_in,
    setattr_in,
    symlink_in,
)
from backend.metadata.txn import Database, Txn
from backend.metadata.types import BatchOp, CommitRequest, Principal
from backend.protocol.errors import CirrusError, InvalidRequest

MAX_BATCH_OPS = 1000
MAX_CLIENT = 64


def _given_answers(tx: Txn, client: str | None, ops: list[BatchOp]) -> dict[int, dict]:
    """The answers already given to this client's operations in `ops`, after dropping its
    older ones (it sends in order, so it holds the answers to everything before)."""
    seqs = [op.seq for op in ops if op.seq is not None]
    if client is None or not seqs:
        return {}
    mine = (BatchAnswer.namespace_id == tx.namespace_id) & (BatchAnswer.client == client)
    tx.session.execute(delete(BatchAnswer).where(mine, BatchAnswer.seq < min(seqs)))
    query = select(BatchAnswer.seq, BatchAnswer.answer).where(mine, BatchAnswer.seq.in_(seqs))
    return dict(tx.session.execute(query).tuples().all())


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one operation returned (as its single call would) or the error refusing it."""

    op: str
    value: Any = None
    error: CirrusError | None = None


Render = Callable[[Outcome], dict]


class Batches:
    def __init__(self, db: Database, max_revisions: int) -> None:
        self.db = db
        self.max_revisions = max_revisions

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
        answers: list[dict] = []
        with self.db.write(who.namespace_id) as tx:
            given = _given_answers(tx, client, ops)
            ids = [op.args["request"].commit_id for op in ops if op.kind == "commit"]
            note_unused_commit_ids(tx, [i for i in ids if i is not None])
            tx.owned(list({b.hash: None for _parts, blocks in commits.values() for b in blocks}))
            for index, op in enumerate(ops):
                answer = given.get(op.seq)
                if answer is None:
                    answer = render(self._outcome(tx, who, op, commits.get(index)))
                    if client is not None and op.seq is not None:
                        row = {"namespace_id": tx.namespace_id, "client": client, "seq": op.seq}
                        tx.session.add(BatchAnswer(**row, answer=answer))
                answers.append(answer)
                if stop_on_error and ("error" in answer or answer["body"].get("conflict")):
                    break
        return answers

    def _outcome(self, tx: Txn, who: Principal, op: BatchOp, commit: tuple | None) -> Outcome:
        try:
            with tx.step():
                return Outcome(op.kind, self._one(tx, who, op, commit))
        except CirrusError as exc:
            return Outcome(op.kind, error=exc)

    def _one(self, tx: Txn, who: Principal, op: BatchOp, commit: tuple | None) -> Any:
        args = op.args
        match op.kind:
            case "mkdir":
                return mkdir_in(tx, args["path"], args["mode"], args["mtime_ns"], args["parents"])
            case "symlink":
                return symlink_in(tx, args["path"], args["target"], args["mtime_ns"])
            case "move":
                return move_in(tx, args["src"], args["dst"], args["mode"])
            case "delete":
                return delete_in(tx, args["path"], args["recursive"])
            case "setattr":
                return setattr_in(tx, args["path"], args["mode"], args["mtime_ns"])
            case "xattr":
                return set_xattr_in(tx, args["path"], args["name"], args["value"])
            case "commit":
                request: CommitRequest = args["request"]
                parts, blocks = commit
                return commit_once(tx, who, parts, request, blocks, self.max_revisions)
        raise InvalidRequest(f"unknown operation {op.kind!r}")
