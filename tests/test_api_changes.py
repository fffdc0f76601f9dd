"""The change journal over HTTP: paging, long polls and snapshots."""

import threading
import time

import httpx
import pytest

from tests.support.server import ServerProcess


def upload(client: httpx.Client, path: str, data: bytes) -> dict:
    response = client.post("/v1/files", params={"uploadType": "media", "path": path}, content=data)
    assert response.status_code == 201, response.text
    return response.json()


def test_long_poll_returns_within_a_second_of_another_clients_change(
    shared_server: ServerProcess,
) -> None:
    token = shared_server.create_user("poller")
    with shared_server.client(token) as watcher, shared_server.client(token, "phone") as writer:
        cursor = watcher.get("/v1/account").json()["cursor"]
        answers: list[tuple[dict, float]] = []

        def poll() -> None:
            reply = watcher.get("/v1/changes/poll", params={"cursor": cursor, "timeout": 30})
            answers.append((reply.json(), time.monotonic()))

        thread = threading.Thread(target=poll)
        thread.start()
        time.sleep(0.5)  # the poll is waiting
        assert not answers
        upload(writer, "/new.txt", b"hello")
        changed_at = time.monotonic()
        thread.join(10)
        assert answers, "the poll did not return"
        body, returned_at = answers[0]
        assert body["changes"] is True and body["cursor"] > cursor
        assert returned_at - changed_at < 1.0

        page = watcher.get("/v1/changes", params={"cursor": cursor}).json()
        assert page["cursor"] == body["cursor"] and page["has_more"] is False
        paths = [entry["node"]["path"] for entry in page["entries"]]
        assert "/new.txt" in paths
        cursors = [entry["cursor"] for entry in page["entries"]]
        assert cursors == sorted(cursors) and cursors[-1] == page["cursor"]


def test_long_poll_times_out_without_changes(new_user) -> None:
    alice = new_user()
    cursor = alice.get("/v1/account").json()["cursor"]
    started = time.monotonic()
    reply = alice.get("/v1/changes/poll", params={"cursor": cursor, "timeout": 1})
    assert reply.json() == {"changes": False, "cursor": cursor}
    assert 0.9 <= time.monotonic() - started < 5


def test_poll_answers_at_once_when_behind(new_user) -> None:
    alice = new_user()
    upload(alice, "/a", b"a")
    started = time.monotonic()
    reply = alice.get("/v1/changes/poll", params={"cursor": 0, "timeout": 30}).json()
    assert reply["changes"] is True and reply["cursor"] > 0
    assert time.monotonic() - started < 2


def test_another_users_change_does_not_wake_my_poll(new_user) -> None:
    alice, bob = new_user(), new_user()
    cursor = alice.get("/v1/account").json()["cursor"]
    timer = threading.Timer(0.3, upload, args=(bob, "/b", b"b"))
    timer.start()
    try:
        reply = alice.get("/v1/changes/poll", params={"cursor": cursor, "timeout": 2}).json()
    finally:
        timer.join(10)
    assert reply == {"changes": False, "cursor": cursor}


def test_changes_pages_and_deletions(new_user) -> None:
    alice = new_user()
    for name in ("a", "b", "c"):
        upload(alice, f"/{name}", name.encode())
    node_id = alice.get("/v1/tree/stat", params={"path": "/b"}).json()["id"]
    assert alice.post("/v1/tree/delete", json={"path": "/b"}).json() == {"deleted": [node_id]}
    entries, cursor = [], 0
    for _ in range(20):  # bounded paging
        page = alice.get("/v1/changes", params={"cursor": cursor, "limit": 2}).json()
        assert len(page["entries"]) <= 2
        entries += page["entries"]
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    assert not page["has_more"]
    last = {entry["node"]["id"]: entry["node"] for entry in entries}
    assert last[node_id]["deleted"] is True
    assert {n["path"] for n in last.values() if not n["deleted"]} >= {"/a", "/c"}


def test_snapshot_pages_through_live_nodes(new_user) -> None:
    alice = new_user()
    for name in ("x", "y", "z"):
        upload(alice, f"/d/{name}", b"1")
    first = alice.get("/v1/snapshot", params={"limit": 2}).json()
    assert first["has_more"] is True and len(first["nodes"]) == 2
    rest = alice.get(
        "/v1/snapshot", params={"after_id": first["nodes"][-1]["id"], "limit": 100}
    ).json()
    assert rest["has_more"] is False
    paths = {node["path"] for node in first["nodes"] + rest["nodes"]}
    assert paths == {"/", "/d", "/d/x", "/d/y", "/d/z"}
    ids = [node["id"] for node in first["nodes"] + rest["nodes"]]
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"cursor": -1},
        {"cursor": "x"},
        {"cursor": 0, "timeout": 0},
        {"cursor": 0, "timeout": 301},
    ],
)
def test_bad_poll_parameters_are_400(new_user, params: dict) -> None:
    reply = new_user().get("/v1/changes/poll", params=params)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_request"
