"""POST /v1/batch: namespace operations in order, one transaction, one outcome each."""

import base64

import httpx
import pytest

from backend.protocol.hashing import block_hash


def batch(http: httpx.Client, ops: list[dict], **options: object) -> list[dict]:
    response = http.post("/v1/batch", json={"ops": ops, **options})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def stat(client: httpx.Client, path: str) -> httpx.Response:
    return client.get("/v1/tree/stat", params={"path": path})


def cursor(client: httpx.Client) -> int:
    return client.get("/v1/account").json()["cursor"]


def test_every_kind_of_operation_applies_in_order(new_user) -> None:
    alice = new_user()
    data = b"hello"
    ops = [
        {"op": "mkdir", "path": "/d", "mode": 0o700, "mtime_ns": 5, "parents": True},
        {"op": "commit", "path": "/d/f.txt", "base_rev": None, "size": 0, "blocks": [],
         "mode": 0o600, "mtime_ns": 7, "commit_id": "c1"},
        {"op": "setattr", "path": "/d/f.txt", "mode": 0o640},
        {"op": "xattr", "path": "/d/f.txt", "name": "user.tag",
         "value": base64.b64encode(b"red").decode()},
        {"op": "symlink", "path": "/d/link", "target": "f.txt"},
        {"op": "move", "from": "/d/f.txt", "to": "/d/g.txt", "mode": "noreplace"},
        {"op": "commit", "path": "/d/h.bin", "base_rev": None, "size": len(data),
         "blocks": [{"hash": block_hash(data), "size": len(data)}]},
        {"op": "delete", "path": "/d/link"},
    ]  # fmt: skip
    results = batch(alice, ops)
    assert [r["status"] for r in results] == [201, 201, 200, 200, 201, 200, 201, 200]
    assert results[0]["body"]["mode"] == 0o700
    assert results[1]["body"]["rev"] == 1 and results[1]["body"]["conflict"] is False
    assert results[3]["body"]["xattrs"] == {"user.tag": "cmVk"}
    assert results[5]["body"]["node"]["path"] == "/d/g.txt"
    assert results[6]["body"]["status"] == "pending"
    assert results[6]["body"]["missing"] == [block_hash(data)]
    assert results[7]["body"]["deleted"] == [results[4]["body"]["id"]]
    moved = stat(alice, "/d/g.txt").json()
    assert (moved["mode"], moved["mtime_ns"]) == (0o640, 7)
    assert stat(alice, "/d/link").status_code == 404
    # Every change is in the journal, in the order applied.
    changes = alice.get("/v1/changes", params={"cursor": 0}).json()["entries"]
    paths = [c["node"]["path"] for c in changes]
    assert paths == ["/d", "/d/f.txt", "/d/f.txt", "/d/f.txt", "/d/link", "/d/g.txt",
                     "/d/h.bin", "/d/link"]  # fmt: skip


def test_a_refused_operation_keeps_the_ones_around_it(new_user) -> None:
    alice = new_user()
    before = cursor(alice)
    results = batch(
        alice,
        [
            {"op": "mkdir", "path": "/a"},
            {"op": "mkdir", "path": "/a"},  # exists
            {"op": "move", "from": "/nowhere", "to": "/b"},  # not found
            {"op": "setattr", "path": "/a", "mtime_ns": 42},
            {"op": "commit", "path": "/a", "base_rev": None, "size": 0, "blocks": []},
            {"op": "mkdir", "path": "/c"},
        ],
    )
    assert [r["status"] for r in results] == [201, 409, 404, 200, 409, 201]
    assert results[1]["error"]["code"] == "exists"
    assert results[2]["error"]["code"] == "not_found"
    assert results[4]["error"]["code"] == "is_a_directory"
    assert "message" in results[4]["error"]
    assert stat(alice, "/a").json()["mtime_ns"] == 42
    assert stat(alice, "/c").status_code == 200
    assert cursor(alice) == before + 3  # the refused ones journaled nothing


def test_refused_steps_leave_no_gap_in_the_journal(new_user) -> None:
    alice = new_user()
    batch(alice, [{"op": "mkdir", "path": "/full"}, {"op": "mkdir", "path": "/full/x"}])
    before = cursor(alice)
    results = batch(
        alice,
        [
            {"op": "mkdir", "path": "/deep/er", "parents": True},
            {"op": "move", "from": "/full", "to": "/full/x/y"},
            {"op": "mkdir", "path": "/z"},
        ],
    )
    assert [r["status"] for r in results] == [201, 409, 201]
    entries = alice.get("/v1/changes", params={"cursor": before}).json()["entries"]
    assert [e["cursor"] for e in entries] == [before + 1, before + 2, before + 3]
    assert [e["node"]["path"] for e in entries] == ["/deep", "/deep/er", "/z"]


def test_stop_on_error_ends_the_batch_at_the_first_refusal(new_user) -> None:
    alice = new_user()
    results = batch(
        alice,
        [
            {"op": "mkdir", "path": "/a"},
            {"op": "delete", "path": "/missing"},
            {"op": "mkdir", "path": "/b"},
        ],
        stop_on_error=True,
    )
    assert [r["status"] for r in results] == [201, 404]
    assert stat(alice, "/a").status_code == 200
    assert stat(alice, "/b").status_code == 404


def test_stop_on_error_also_ends_after_a_conflicted_copy(new_user) -> None:
    alice = new_user(device="laptop")
    batch(alice, [{"op": "commit", "path": "/f.txt", "base_rev": None, "size": 0, "blocks": []}])
    results = batch(
        alice,
        [
            {"op": "commit", "path": "/f.txt", "base_rev": None, "size": 0, "blocks": []},
            {"op": "mkdir", "path": "/after"},
        ],
        stop_on_error=True,
    )
    assert len(results) == 1 and results[0]["body"]["conflict"] is True
    assert "conflicted copy" in results[0]["body"]["path"]


def test_a_batch_retried_after_a_lost_answer_changes_nothing_more(new_user) -> None:
    alice = new_user()
    ops = [
        {"op": "mkdir", "path": "/p/q", "parents": True},
        {"op": "commit", "path": "/p/q/f", "base_rev": None, "size": 0, "blocks": [],
         "commit_id": "once"},
        {"op": "setattr", "path": "/p/q/f", "mtime_ns": 9},
    ]  # fmt: skip
    first = batch(alice, ops)
    again = batch(alice, ops)
    assert [r["status"] for r in again] == [200, 201, 200]
    assert again[1]["body"]["rev"] == first[1]["body"]["rev"] == 1
    assert again[1]["body"]["node"]["id"] == first[1]["body"]["node"]["id"]
    history = alice.get("/v1/files/history", params={"path": "/p/q/f"}).json()
    assert len(history["revisions"]) == 1


def test_tagged_operations_are_not_applied_twice_when_a_batch_is_resent(new_user) -> None:
    alice = new_user()
    batch(alice, [{"op": "commit", "path": "/a", "base_rev": None, "size": 0, "blocks": []}])
    ops = [
        {"op": "move", "from": "/a", "to": "/b", "seq": 10},
        {"op": "commit", "path": "/a", "base_rev": None, "size": 0, "blocks": [],
         "commit_id": "new-a"},
        {"op": "delete", "path": "/nothing", "seq": 12},
        {"op": "setattr", "path": "/a", "mode": 0o600, "seq": 13},
    ]  # fmt: skip
    first = batch(alice, ops, client="laptop-1")
    assert [r["status"] for r in first] == [200, 201, 404, 200]
    new_a = stat(alice, "/a").json()
    before = cursor(alice)
    again = batch(alice, ops, client="laptop-1")
    # The first answers (the refusal included); the commit's answer shows its node now.
    assert [again[i] for i in (0, 2, 3)] == [first[i] for i in (0, 2, 3)]
    assert again[1]["body"]["rev"] == first[1]["body"]["rev"]
    assert cursor(alice) == before  # nothing applied twice
    assert stat(alice, "/a").json()["id"] == new_a["id"]  # not moved onto /b again
    # Untagged, or from another client, the same move is applied again.
    other = batch(alice, ops[:1], client="laptop-2")
    assert other[0]["status"] == 200 and stat(alice, "/a").status_code == 404
    # A batch that starts after a seq drops the answers below it.
    later = batch(alice, [{"op": "mkdir", "path": "/c", "seq": 20}], client="laptop-1")
    assert later[0]["status"] == 201
    resent = batch(alice, ops[:1], client="laptop-1")
    assert resent[0]["status"] == 404  # seq 10 forgotten: applied (and refused) afresh


def test_a_delete_naming_what_it_removes_refuses_to_remove_anything_else(new_user) -> None:
    """A client that deleted a folder's content name by name sends one recursive delete
    naming every node it deleted: what another client added meanwhile stops it whole."""
    alice = new_user()
    made = batch(alice, [
        {"op": "mkdir", "path": "/tree/sub", "parents": True},
        {"op": "symlink", "path": "/tree/sub/a", "target": "x"},
        {"op": "symlink", "path": "/tree/b", "target": "x"},
        {"op": "symlink", "path": "/tree/late", "target": "x"},
    ])  # fmt: skip
    ids = {stat(alice, path).json()["id"] for path in ("/tree", "/tree/sub", "/tree/sub/a")}
    ids.add(made[2]["body"]["id"])  # /tree/b; /tree/late is someone else's, unseen
    refused = batch(alice, [{"op": "delete", "path": "/tree", "recursive": True,
                             "only": sorted(ids)}])  # fmt: skip
    assert refused[0]["status"] == 409 and refused[0]["error"]["code"] == "not_empty"
    assert stat(alice, "/tree/sub/a").status_code == 200
    # Once deleted, a listed node may be gone already (an earlier attempt removed it).
    done = batch(alice, [
        {"op": "delete", "path": "/tree/late"},
        {"op": "delete", "path": "/tree/sub/a"},
        {"op": "delete", "path": "/tree", "recursive": True, "only": sorted(ids)},
    ])  # fmt: skip
    assert [r["status"] for r in done] == [200, 200, 200]
    assert sorted(done[2]["body"]["deleted"]) == sorted(ids - {made[1]["body"]["id"]})
    assert stat(alice, "/tree").status_code == 404
    trash = alice.get("/v1/trash").json()["items"]
    assert "/tree" in [item["path"] for item in trash]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"ops": []}, 400),
        ({}, 400),
        ({"ops": [{"op": "format_disk"}]}, 400),
        ({"ops": [{"op": "mkdir"}]}, 400),
        ({"ops": [{"op": "mkdir", "path": "/a/../b"}]}, 400),
        ({"ops": [{"op": "mkdir", "path": "/ok"}, {"op": "delete", "path": "rel"}]}, 400),
        ({"ops": [{"op": "xattr", "path": "/a", "name": "user.x", "value": "!!"}]}, 400),
        ({"ops": [{"op": "commit", "path": "/f", "size": 5, "blocks": []}]}, 400),
        ({"ops": [{"op": "setattr", "path": "/a", "mode": 2**70}]}, 400),
        ({"ops": "mkdir"}, 400),
        ({"ops": [{"op": "mkdir", "path": "/ok", "seq": -1}]}, 400),
        ({"ops": [{"op": "mkdir", "path": "/ok"}], "client": "x" * 65}, 400),
        (
            {"ops": [{"op": "mkdir", "path": "/ok"}, {"op": "delete", "path": "/ok", "only": [0]}]},
            400,
        ),
        (
            {
                "ops": [
                    {"op": "mkdir", "path": "/ok"},
                    {"op": "delete", "path": "/ok", "only": "all"},
                ]
            },
            400,
        ),
        ({"ops": [{"op": "mkdir", "path": f"/d{i}"} for i in range(1001)]}, 413),
    ],
)
def test_bad_batches_are_refused_whole_with_4xx(new_user, body: dict, status: int) -> None:
    alice = new_user()
    before = cursor(alice)
    response = alice.post("/v1/batch", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]
    assert cursor(alice) == before
    assert stat(alice, "/ok").status_code == 404


def test_malformed_json_is_a_400(new_user) -> None:
    response = new_user().post(
        "/v1/batch", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


def test_the_batch_is_in_the_openapi_schema(shared_server) -> None:
    with shared_server.client() as client:
        schema = client.get("/openapi.json").json()
    assert "/v1/batch" in schema["paths"]
    assert "BatchIn" in schema["components"]["schemas"]
