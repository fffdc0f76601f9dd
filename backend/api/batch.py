"""A batch of namespace operations in one request and one transaction (used by the mount).

The body is checked as a whole first (shape, paths, limits): a malformed batch is refused
with a 4xx and changes nothing. Then each operation gets the answer its single call would
have given, or its own error; see docs/api.md and backend/metadata/batch.py.
"""

from typing import Any

from fastapi import APIRouter

from backend.api.bodies import large_json_post, release
from backend.api.deps import PrincipalDep, ServicesDep, check_path
from backend.api.files import commit_answer, commit_request
from backend.api.models import (
    MAX_BLOCKS_PER_FILE,
    BatchIn,
    BatchOpIn,
    CommitOp,
    LinkOp,
    MkdirOp,
    MknodOp,
    MoveOp,
    SetattrOp,
    SymlinkOp,
    XattrOp,
)
from backend.api.sliced_json import SlicedJSONResponse
from backend.api.tree import move_answer, xattr_value
from backend.metadata.batch import MAX_BATCH_OPS, Outcome
from backend.metadata.types import BatchOp
from backend.protocol.errors import PayloadTooLarge

router = APIRouter(prefix="/v1", tags=["batch"])


@large_json_post(router, "/batch")
def batch(who: PrincipalDep, services: ServicesDep, body: BatchIn) -> SlicedJSONResponse:
    """Apply the operations in order; `results` has one item per operation tried."""
    if len(body.ops) > MAX_BATCH_OPS:
        raise PayloadTooLarge(f"a batch holds at most {MAX_BATCH_OPS} operations")
    blocks = sum(len(op.blocks) for op in body.ops if isinstance(op, CommitOp))
    if blocks > MAX_BLOCKS_PER_FILE:
        raise PayloadTooLarge(f"a batch's commits name at most {MAX_BLOCKS_PER_FILE} blocks")
    ops = [_checked(op) for op in body.ops]
    try:
        answers = services.metadata.apply_batch(who, ops, _answer, body.stop_on_error, body.client)
        response = SlicedJSONResponse({"results": answers})  # rendered in this worker thread
        release(a["body"]["missing"] for a in answers if "missing" in a.get("body", ()))
        return response
    finally:
        commits = [op for op in body.ops if isinstance(op, CommitOp)]
        release([op.blocks for op in commits])
        release(op.args["request"].blocks for op in ops if op.kind == "commit")


def _checked(op: BatchOpIn) -> BatchOp:
    """The service's form of one operation, with the checks its single call makes."""
    if isinstance(op, CommitOp):
        return BatchOp("commit", {"request": commit_request(op)})
    checked = _checked_plain(op)
    return BatchOp(checked.kind, {**checked.args, "attrs": op.posix()}, checked.seq)


def _checked_plain(op: BatchOpIn) -> BatchOp:
    if isinstance(op, MknodOp):
        args = {"type": op.type, "mode": op.mode, "rdev": op.rdev, "mtime_ns": op.mtime_ns}
        return BatchOp("mknod", {"path": check_path(op.path), **args}, op.seq)
    if isinstance(op, LinkOp):
        return BatchOp("link", {"src": check_path(op.from_), "dst": check_path(op.to)}, op.seq)
    if isinstance(op, MkdirOp):
        args = {"mode": op.mode, "mtime_ns": op.mtime_ns, "parents": op.parents}
        return BatchOp("mkdir", {"path": check_path(op.path), **args}, op.seq)
    if isinstance(op, SymlinkOp):
        args = {"target": op.target, "mtime_ns": op.mtime_ns}
        return BatchOp("symlink", {"path": check_path(op.path), **args}, op.seq)
    if isinstance(op, MoveOp):
        paths = {"src": check_path(op.from_), "dst": check_path(op.to)}
        return BatchOp("move", {**paths, "mode": op.mode}, op.seq)
    if isinstance(op, SetattrOp):
        args = {"mode": op.mode, "mtime_ns": op.mtime_ns}
        return BatchOp("setattr", {"path": check_path(op.path), **args}, op.seq)
    if isinstance(op, XattrOp):
        args = {"name": op.name, "value": xattr_value(op)}
        return BatchOp("xattr", {"path": check_path(op.path), **args}, op.seq)
    only = None if op.only is None else frozenset(op.only)
    args = {"path": check_path(op.path), "recursive": op.recursive, "only": only}
    return BatchOp("delete", args, op.seq)


def _answer(outcome: Outcome) -> dict[str, Any]:
    """{"status", "body"} as the single call answers, or {"status", "error"}."""
    if outcome.error is not None:
        error = {"code": outcome.error.code, "message": outcome.error.message}
        return {"status": outcome.error.status, "error": error}
    value = outcome.value
    match outcome.op:
        case "mkdir":
            node, created = value
            return {"status": 201 if created else 200, "body": node.to_json()}
        case "symlink" | "mknod" | "link":
            return {"status": 201, "body": value.to_json()}
        case "move":
            return {"status": 200, "body": move_answer(*value)}
        case "delete":
            return {"status": 200, "body": {"deleted": value}}
        case "commit":
            return {"status": 201, "body": commit_answer(value)}
    return {"status": 200, "body": value.to_json()}  # setattr, xattr
