"""Many namespace operations in one write transaction, each with its own outcome.

A sync client replays its journal of local changes in order; one request and one
transaction (one fsync) per change was what bounded it. A batch applies the operations in
the order given, each in a SAVEPOINT of one write transaction of the drive: an operation
that is refused is undone alone, the ones before it stay, and everything that succeeded
commits together with its change-journal entries. Writers of the drive queue on the same
lock as single calls, so concurrent clients still see one serial order.

With `stop_on_error` the batch ends at the first refused operation, and after a commit that
became a conflicted copy: a client replaying a journal then looks at the server's state
right after that step, before anything later in its journal changes it.
"""

from dataclasses import dataclass
from typing import Any

from backend.metadata.revisions import check_commit, commit_once
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one operation returned (as its single call would) or the error refusing it."""

    op: str
    value: Any = None
    error: CirrusError | None = None


class Batches:
    def __init__(self, db: Database, max_revisions: int) -> None:
        self.db = db
        self.max_revisions = max_revisions

    def apply(self, who: Principal, ops: list[BatchOp], stop_on_error: bool) -> list[Outcome]:
        """Apply `ops` in order; one Outcome per operation tried (all of them, unless
        stop_on_error ended the batch early)."""
        if not 1 <= len(ops) <= MAX_BATCH_OPS:
            raise InvalidRequest(f"a batch holds 1 to {MAX_BATCH_OPS} operations")
        commits = {
            index: check_commit(op.args["request"])
            for index, op in enumerate(ops)
            if op.kind == "commit"
        }
        outcomes: list[Outcome] = []
        with self.db.write(who.namespace_id) as tx:
            for index, op in enumerate(ops):
                try:
                    with tx.step():
                        value = self._one(tx, who, op, commits.get(index))
                except CirrusError as exc:
                    outcomes.append(Outcome(op.kind, error=exc))
                    if stop_on_error:
                        break
                    continue
                outcomes.append(Outcome(op.kind, value))
                if stop_on_error and isinstance(value, CommitResult) and value.conflict:
                    break
        return outcomes

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
