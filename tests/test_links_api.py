"""Public read-only links over HTTP: a folder and a file served without a token, never
outside the linked node, refused once revoked or expired, and made only by owners."""

import time

import httpx

from tests.support.server import ServerProcess
from tests.test_shares_api import content, pair, share, upload

pair = pair  # the fixture, for this module's tests


def link(client: httpx.Client, path: str, expires_in_s: int = 600) -> httpx.Response:
    return client.post("/v1/links", json={"path": path, "expires_in_s": expires_in_s})


def test_folder_and_file_links(shared_server: ServerProcess, pair: tuple) -> None:
    alice, _bob, _bob_name = pair
    upload(alice, "/pub/a.txt", b"public a").raise_for_status()
    upload(alice, "/pub/sub/b.txt", b"public b").raise_for_status()
    upload(alice, "/secret.txt", b"secret").raise_for_status()
    folder = link(alice, "/pub")
    assert folder.status_code == 201, folder.text
    file = link(alice, "/pub/a.txt").raise_for_status().json()
    with shared_server.client() as anyone:  # no token at all
        url = folder.json()["url"]
        listing = anyone.get(url).raise_for_status().json()
        assert [(e["name"], e["type"]) for e in listing["entries"]] == [
            ("a.txt", "file"), ("sub", "dir"),
        ]  # fmt: skip
        assert anyone.get(url, params={"path": "/sub/b.txt"}).content == b"public b"
        assert anyone.get(file["url"]).content == b"public a"
        ranged = anyone.get(file["url"], headers={"Range": "bytes=7-"})
        assert ranged.status_code == 206 and ranged.content == b"a"
        escape = anyone.get(url, params={"path": "/../secret.txt"})
        assert escape.status_code == 400 and escape.json()["error"]["code"] == "invalid_path"
        assert anyone.get(url, params={"path": "/nope"}).status_code == 404
        assert anyone.get("/v1/public/not-a-real-link").status_code == 404
    listed = alice.get("/v1/links").raise_for_status().json()["links"]
    assert {entry["path"] for entry in listed} == {"/pub", "/pub/a.txt"}
    assert "token" not in listed[0]


def test_revoked_and_expired_links_are_refused(shared_server: ServerProcess, pair: tuple) -> None:
    alice, _bob, _bob_name = pair
    upload(alice, "/l/x.txt", b"x").raise_for_status()
    revoked = link(alice, "/l/x.txt").raise_for_status().json()
    short = link(alice, "/l/x.txt", expires_in_s=1).raise_for_status().json()
    assert alice.delete(f"/v1/links/{revoked['id']}").status_code == 204
    assert alice.delete(f"/v1/links/{revoked['id']}").status_code == 404
    with shared_server.client() as anyone:
        assert anyone.get(revoked["url"]).status_code == 404
        time.sleep(1.2)
        expired = anyone.get(short["url"])
        assert expired.status_code == 410 and expired.json()["error"]["code"] == "link_expired"
    assert alice.get("/v1/links").json()["links"] == []
    assert link(alice, "/l/x.txt", expires_in_s=0).status_code == 400
    assert link(alice, "/missing").status_code == 404


def test_links_never_reach_into_shares(shared_server: ServerProcess, pair: tuple) -> None:
    alice, bob, bob_name = pair
    upload(alice, "/team/t.txt", b"alice's").raise_for_status()
    share(alice, "/team", bob_name, "write").raise_for_status()
    refused = link(bob, "/team")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    # bob's whole drive linked: the share inside it stays out of the link's reach.
    upload(bob, "/own.txt", b"bob's").raise_for_status()
    whole = link(bob, "/").raise_for_status().json()
    with shared_server.client() as anyone:
        assert anyone.get(whole["url"], params={"path": "/own.txt"}).content == b"bob's"
        inside = anyone.get(whole["url"], params={"path": "/team/t.txt"})
        assert inside.status_code == 403
    assert content(bob, "/team/t.txt") == b"alice's"
