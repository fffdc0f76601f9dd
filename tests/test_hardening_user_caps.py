"""Per-user caps on what a user can pin on the server: open resumable uploads (429), the
bytes they announce (507), their lifetime, and the batch answers kept for retries."""

import sqlite3
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from backend.metadata.batch import MAX_BATCH_OPS, MAX_KEPT_ANSWERS
from tests.support.server import ServerProcess

DAY_S = 24 * 3600


def _open(client: httpx.Client, path: str, size: int) -> httpx.Response:
    return client.post(
        "/v1/files",
        params={"uploadType": "resumable", "path": path},
        headers={"X-Upload-Content-Length": str(size)},
    )


@pytest.fixture
def capped(tmp_path: Path):
    args = ("--upload-sessions-per-user", "3", "--upload-spool-bytes-per-user", "1000")
    server = ServerProcess(tmp_path / "capped", extra_args=(*args, "--upload-lifetime-s", "2"))
    try:
        yield server.start()
    finally:
        server.stop()
    assert not server.errors_logged(), server.log_tail()


def test_open_uploads_and_their_bytes_are_capped_per_user(capped: ServerProcess) -> None:
    alice_token, bob_token = capped.create_user("alice"), capped.create_user("bob")
    with capped.client(alice_token) as alice, capped.client(bob_token) as bob:
        locations = [_open(alice, f"/f{i}", 100).headers["location"] for i in range(3)]
        refused = _open(alice, "/f3", 100)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_uploads"
        assert _open(bob, "/f", 100).status_code == 200  # another user is not affected
        assert alice.delete(locations[0]).status_code == 204
        refused = _open(alice, "/big", 801)  # 200 already announced, 1000 at most
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"]["code"] == "upload_space_exceeded"
        assert _open(alice, "/fits", 800).status_code == 200
        # abandoned sessions expire (here after 2 s) and stop counting
        time.sleep(2.5)
        gone = alice.put(locations[1], headers={"Content-Range": "bytes */100"})
        assert gone.status_code == 404
        assert _open(alice, "/again", 1000).status_code == 200


def test_uploads_expire_after_a_day_by_default(new_user) -> None:
    client: httpx.Client = new_user()
    answer = _open(client, "/f", 10)
    assert answer.status_code == 200
    expires = answer.json()["expires"]
    left = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp() - time.time()
    assert DAY_S - 600 < left <= DAY_S + 60


def test_batch_answers_kept_per_user_are_bounded(server: ServerProcess) -> None:
    with server.client(server.create_user("carol")) as client:
        ops = [{"op": "setattr", "path": "/", "mode": 0o755, "seq": seq} for seq in range(1000)]
        for batch in range(MAX_KEPT_ANSWERS // MAX_BATCH_OPS + 2):
            answer = client.post("/v1/batch", json={"ops": ops, "client": f"fresh-{batch}"})
            assert answer.status_code == 200, answer.text
    with sqlite3.connect(server.data_dir / "metadata.db") as db:
        kept = db.execute("SELECT count(*) FROM batch_answers").fetchone()[0]
    assert kept <= MAX_KEPT_ANSWERS + MAX_BATCH_OPS
