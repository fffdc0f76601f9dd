"""JSON answers that may be large, encoded a slice at a time.

A commit's answer lists the hashes the server still lacks: up to MAX_BLOCKS_PER_FILE of them
(35 MB of JSON). One json.dumps of that list holds the GIL for ~100 ms, during which no other
request of the server moves, whatever thread it runs in. Encoded ITEMS_AT_ONCE items per call,
the GIL changes hands in between.
"""

import json
from typing import Any

from starlette.responses import JSONResponse

ITEMS_AT_ONCE = 4096


def _dumps(value: Any) -> str:
    """As Starlette's JSONResponse encodes."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _large(value: Any) -> bool:
    """Whether a list longer than ITEMS_AT_ONCE is anywhere in `value`."""
    if isinstance(value, dict):
        return any(_large(item) for item in value.values())
    if isinstance(value, list):
        return len(value) > ITEMS_AT_ONCE or any(_large(item) for item in value)
    return False


def _encode(value: Any, out: list[str]) -> None:
    """Only the containers that hold a long list are taken apart: the rest, such as every
    answer of a mount's ordinary batch, is encoded by one json.dumps call each."""
    if not _large(value):
        out.append(_dumps(value))
    elif isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            out.append(("," if index else "") + _dumps(str(key)) + ":")
            _encode(item, out)
        out.append("}")
    elif any(isinstance(item, dict | list) for item in value):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        slices = range(0, len(value), ITEMS_AT_ONCE)
        out.append("[" + ",".join(_dumps(value[s : s + ITEMS_AT_ONCE])[1:-1] for s in slices) + "]")


class SlicedJSONResponse(JSONResponse):
    """A JSONResponse whose long lists are encoded a slice at a time (same bytes)."""

    def render(self, content: Any) -> bytes:
        out: list[str] = []
        _encode(content, out)
        return "".join(out).encode("utf-8")
