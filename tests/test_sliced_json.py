"""Large answers are encoded a slice at a time (backend/api/sliced_json.py) into exactly the
bytes Starlette's JSONResponse would send."""

import os

import pytest
from starlette.responses import JSONResponse

from backend.api.sliced_json import ITEMS_AT_ONCE, SlicedJSONResponse

LONG = [os.urandom(8).hex() for _ in range(3 * ITEMS_AT_ONCE + 5)]


@pytest.mark.parametrize(
    "content",
    [
        {"results": [{"status": 201, "body": {"missing": LONG, "rev": 3, "conflict": False}}]},
        {"missing": LONG, "path": '/é\u2028"quoted"', "node": {"id": 1, "size": None}},
        {"results": [{"status": 409, "error": {"code": "exists"}}] * 3 + [{"body": []}]},
        {"missing": LONG[:ITEMS_AT_ONCE]},
        {"missing": LONG[: ITEMS_AT_ONCE + 1]},
        [],
        {"nested": [[1, 2], [], [{"a": [0.5, None, True]}]]},
    ],
)
def test_the_same_bytes_as_a_json_response(content: object) -> None:
    assert SlicedJSONResponse(content).body == JSONResponse(content).body


def test_a_value_json_cannot_hold_is_refused_as_by_a_json_response() -> None:
    with pytest.raises(ValueError):
        JSONResponse({"x": float("nan")})
    with pytest.raises(ValueError):
        SlicedJSONResponse({"x": [float("nan")] * (ITEMS_AT_ONCE + 1)})
