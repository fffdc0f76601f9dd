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


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            out.append(("," if index else "") + _dumps(str(key)) + ":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, list) and len(value) > ITEMS_AT_ONCE:
        slices = range(0, len(value), ITEMS_AT_ONCE)
        out.append("[" + ",".join(_dumps(value[s : s + ITEMS_AT_ONCE])[1:-1] for s in slices) + "]")
    else:
        out.append(_dumps(value))


class SlicedJSONResponse(JSONResponse):
    """A JSONResponse whose long lists are encoded a slice at a time (same bytes)."""

    def render(self, content: Any) -> bytes:
        out: list[str] = []
        _encode(content, out)
        return "".join(out).encode("utf-8")
