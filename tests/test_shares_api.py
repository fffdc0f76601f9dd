"""Sharing over HTTP: a folder shared between two users on a real server, both ways, with
read-only refusal, a rename by the recipient, block isolation, revocation and bad input."""

import os
from collections.abc import Iterator

import blake3
import httpx
import pytest

from tests.support.server import ServerProcess


@pytest.fixture
def pair(shared_server: ServerProcess, request: pytest.FixtureRequest) -> Iterator[tuple]:
    """Two new users' clients (owner, recipient) and the recipient's name."""
    tag = request.node.name.replace("[", "_").replace("]", "")[:40]
    owner, recipient = f"own-{tag}", f"rcp-{tag}"
    with (
        shared_server.client(shared_server.add_user(owner)) as alice,
        shared_server.client(shared_server.add_user(recipient)) as bob,
    ):
        yield alice, bob, recipient


def upload(client: httpx.Client, path: str, data: bytes) -> httpx.Response:
    return client.post("/v1/files", params={"uploadType": "media", "path": path}, content=data)


def content(client: httpx.Client, path: str) -> bytes | None:
    answer = client.get("/v1/files/content", params={"path": path})
    return None if answer.status_code == 404 else answer.raise_for_status().content


def names(client: httpx.Client, path: str) -> list[str]:
    answer = client.get("/v1/tree/list", params={"path": path}).raise_for_status().json()
    return [entry["name"] for entry in answer["entries"]]


def share(client: httpx.Client, path: str, user: str, access: str) -> httpx.Response:
    return client.post("/v1/shares", json={"path": path, "user": user, "access": access})


def error_code(answer: httpx.Response) -> str:
    return answer.json()["error"]["code"]


def test_share_round_trip_both_ways(pair: tuple) -> None:
    alice, bob, bob_name = pair
    assert upload(alice, "/proj/a.txt", b"from alice").status_code == 201
    made = share(alice, "/proj", bob_name, "write")
    assert made.status_code == 201, made.text
    assert made.json()["mount_path"] == "/proj"
    assert "proj" in names(bob, "/")
    assert content(bob, "/proj/a.txt") == b"from alice"
    assert upload(bob, "/proj/b.txt", b"from bob").status_code == 201
    assert content(alice, "/proj/b.txt") == b"from bob"
    # The recipient's own journal and snapshot show the shared folder's content.
    snapshot = bob.get("/v1/snapshot").raise_for_status().json()
    assert {"/proj", "/proj/a.txt", "/proj/b.txt"} <= {n["path"] for n in snapshot["nodes"]}
    assert upload(alice, "/proj/c.txt", b"later").status_code == 201
    entries = bob.get("/v1/changes", params={"cursor": 0}).raise_for_status().json()["entries"]
    assert "/proj/c.txt" in [entry["node"]["path"] for entry in entries]
    listed = bob.get("/v1/shares").raise_for_status().json()
    assert [s["path"] for s in listed["received"]] == ["/proj"]
    assert alice.get("/v1/shares").json()["shared"][0]["user"] == bob_name


def test_read_only_share_refuses_writes(pair: tuple) -> None:
    alice, bob, bob_name = pair
    upload(alice, "/docs/r.txt", b"read me").raise_for_status()
    share(alice, "/docs", bob_name, "read").raise_for_status()
    assert content(bob, "/docs/r.txt") == b"read me"
    refused = upload(bob, "/docs/w.txt", b"no")
    assert refused.status_code == 403 and error_code(refused) == "read_only_share"
    moved = bob.post("/v1/tree/move", json={"from": "/docs/r.txt", "to": "/docs/s.txt"})
    assert moved.status_code == 403
    gone = bob.post("/v1/tree/delete", json={"path": "/docs/r.txt"})
    assert gone.status_code == 403
    assert content(alice, "/docs/r.txt") == b"read me"
    # Sharing something inside a read-only share is refused clearly too.
    for path in ("/docs", "/docs/r.txt"):
        answer = share(bob, path, alice_name(alice), "read")
        assert answer.status_code == 403 and error_code(answer) == "read_only_share"


def test_recipient_renames_the_share(pair: tuple) -> None:
    alice, bob, bob_name = pair
    upload(alice, "/music/x.txt", b"x").raise_for_status()
    share(alice, "/music", bob_name, "write").raise_for_status()
    bob.post("/v1/tree/move", json={"from": "/music", "to": "/from-alice"}).raise_for_status()
    assert content(bob, "/from-alice/x.txt") == b"x"
    upload(alice, "/music/y.txt", b"y").raise_for_status()
    assert names(bob, "/from-alice") == ["x.txt", "y.txt"]
    assert names(alice, "/") == ["music"]  # the owner's folder keeps its name
    moved_out = bob.post("/v1/tree/move", json={"from": "/from-alice/x.txt", "to": "/x.txt"})
    assert moved_out.status_code == 409 and error_code(moved_out) == "cross_share_move"


def test_blocks_are_read_only_through_shares(pair: tuple) -> None:
    alice, bob, bob_name = pair
    secret, shared = os.urandom(5000), os.urandom(5000)
    upload(alice, "/private/s.bin", secret).raise_for_status()
    upload(alice, "/open/o.bin", shared).raise_for_status()
    share(alice, "/open", bob_name, "read").raise_for_status()
    for data, allowed in ((shared, True), (secret, False)):
        answer = bob.get(f"/v1/blocks/{blake3.blake3(data).hexdigest()}")
        assert (answer.status_code == 200) is allowed, answer.text
    assert bob.get("/v1/tree/stat", params={"path": "/private/s.bin"}).status_code == 404


def test_revoke_removes_the_folder_and_keeps_late_edits(pair: tuple) -> None:
    alice, bob, bob_name = pair
    upload(alice, "/team/t.txt", b"t").raise_for_status()
    share_id = share(alice, "/team", bob_name, "write").raise_for_status().json()["id"]
    assert alice.delete(f"/v1/shares/{share_id}").status_code == 204
    assert "team" not in names(bob, "/")
    assert bob.get("/v1/shares").json()["received"] == []
    late = upload(bob, "/team/t.txt", b"bob's late edit")
    assert late.status_code == 201, late.text
    kept = late.json()["path"]
    assert kept.startswith(f"/team ({bob_name}'s conflicted copy ") and kept.endswith("/t.txt")
    assert content(bob, kept) == b"bob's late edit"
    assert content(alice, "/team/t.txt") == b"t"
    assert alice.delete(f"/v1/shares/{share_id}").status_code == 404


def test_bad_shares_are_refused(pair: tuple) -> None:
    alice, _bob, bob_name = pair
    upload(alice, "/f/file.txt", b"f").raise_for_status()
    cases = [
        (("/f", "no-such-user-here", "read"), 404, "unknown_user"),
        (("/f", alice_name(alice), "read"), 400, "invalid_request"),
        (("/f/file.txt", bob_name, "read"), 409, None),
        (("/missing", bob_name, "read"), 404, "not_found"),
    ]
    for (path, user, access), status, code in cases:
        answer = share(alice, path, user, access)
        assert answer.status_code == status, (path, user, answer.text)
        assert code is None or error_code(answer) == code
        assert set(answer.json()["error"]) >= {"code", "message"}
    assert share(alice, "/f", bob_name, "admin").status_code == 400
    share(alice, "/f", bob_name, "read").raise_for_status()
    again = share(alice, "/f", bob_name, "write")
    assert again.status_code == 409


def alice_name(client: httpx.Client) -> str:
    return client.get("/v1/account").raise_for_status().json()["user"]


def journal_view(client: httpx.Client) -> dict[int, dict]:
    """The recipient's drive as its change journal builds it: id -> latest node."""
    latest: dict[int, dict] = {}
    entries = client.get("/v1/changes", params={"cursor": 0}).raise_for_status().json()
    for entry in entries["entries"]:
        latest[entry["node"]["id"]] = entry["node"]
    return {i: n for i, n in latest.items() if not n["deleted"]}


def test_moves_in_and_out_reach_the_recipients_journal(pair: tuple) -> None:
    alice, bob, bob_name = pair
    upload(alice, "/in/keep.txt", b"k").raise_for_status()
    upload(alice, "/outside/deep/d.txt", b"d").raise_for_status()
    share(alice, "/in", bob_name, "read").raise_for_status()
    alice.post("/v1/tree/move", json={"from": "/outside/deep", "to": "/in/deep"})
    alice.post("/v1/tree/move", json={"from": "/in/keep.txt", "to": "/outside/keep.txt"})
    paths = {node["path"] for node in journal_view(bob).values()}
    assert paths == {"/in", "/in/deep", "/in/deep/d.txt"}
    assert content(bob, "/in/deep/d.txt") == b"d"
    moved_out = blake3.blake3(b"k").hexdigest()
    assert bob.get(f"/v1/blocks/{moved_out}").status_code != 200


def test_owner_deleting_the_folder_ends_the_share(pair: tuple) -> None:
    alice, bob, bob_name = pair
    upload(alice, "/gone/g.txt", b"g").raise_for_status()
    share(alice, "/gone", bob_name, "write").raise_for_status()
    alice.post("/v1/tree/delete", json={"path": "/gone", "recursive": True}).raise_for_status()
    assert "gone" not in names(bob, "/")
    assert all(not n["path"].startswith("/gone") for n in journal_view(bob).values())
    assert bob.get("/v1/shares").json()["received"] == []
    # A folder the recipient makes there later is an ordinary folder of theirs.
    bob.post("/v1/tree/mkdir", json={"path": "/gone"}).raise_for_status()
    upload(bob, "/gone/mine.txt", b"mine").raise_for_status()
    assert content(bob, "/gone/mine.txt") == b"mine"


def test_recipient_deleting_the_mount_leaves_the_share(pair: tuple) -> None:
    alice, bob, bob_name = pair
    upload(alice, "/kept/k.txt", b"k").raise_for_status()
    share(alice, "/kept", bob_name, "write").raise_for_status()
    bob.post("/v1/tree/delete", json={"path": "/kept", "recursive": True}).raise_for_status()
    assert content(alice, "/kept/k.txt") == b"k"  # the owner's folder is untouched
    assert alice.get("/v1/shares").json()["shared"] == []
    assert bob.get("/v1/shares").json()["received"] == []
    restored = bob.get("/v1/trash").raise_for_status().json()["items"][0]
    bob.post("/v1/trash/restore", json={"id": restored["id"]}).raise_for_status()
    assert names(bob, "/kept") == []  # a plain empty folder of bob's now


def test_the_share_attribute_is_the_servers(pair: tuple) -> None:
    alice, bob, bob_name = pair
    alice.post("/v1/tree/mkdir", json={"path": "/attr"}).raise_for_status()
    share(alice, "/attr", bob_name, "read").raise_for_status()
    mount = bob.get("/v1/tree/stat", params={"path": "/attr"}).raise_for_status().json()
    assert mount["xattrs"] == {"trusted.cirrus.share": "cmVhZA=="}  # "read"
    forged = {"path": "/attr", "name": "trusted.cirrus.share", "value": "d3JpdGU="}
    assert bob.post("/v1/tree/xattr", json=forged).status_code == 403
    assert upload(bob, "/attr/x.txt", b"x").status_code == 403


def test_a_delete_naming_its_nodes_leaves_a_share_to_the_names_deleted_in_it(pair: tuple) -> None:
    """A recursive delete naming every node it removes (what a mount sends for `rm -rf`)
    is refused when a share's mount lies below: the names deleted inside the share must
    be deleted in the owner's drive, one by one."""
    alice, bob, bob_name = pair
    assert upload(alice, "/proj/a.txt", b"from alice").status_code == 201
    assert share(alice, "/proj", bob_name, "write").status_code == 201
    assert bob.post("/v1/tree/mkdir", json={"path": "/work"}).status_code == 201
    moved = bob.post("/v1/tree/move", json={"from": "/proj", "to": "/work/proj"})
    assert moved.status_code == 200, moved.text
    ids = [bob.get("/v1/tree/stat", params={"path": path}).json()["id"]
           for path in ("/work", "/work/proj", "/work/proj/a.txt")]  # fmt: skip
    answer = bob.post("/v1/batch", json={"ops": [
        {"op": "delete", "path": "/work", "recursive": True, "only": ids}]})  # fmt: skip
    assert answer.json()["results"][0]["error"]["code"] == "not_empty"
    assert content(alice, "/proj/a.txt") == b"from alice"
    assert names(bob, "/work") == ["proj"]
