"""The trash over HTTP: listing, restoring a deep folder, restoring onto a taken name, purge,
and the server emptying it by itself."""

import os
from pathlib import Path

import httpx

from tests.support.mount import wait_until
from tests.support.server import ServerProcess

FILES = {
    "/a/one.txt": b"one",
    "/a/b/two.bin": os.urandom(300_000),
    "/a/b/c/d/e/deep.txt": b"deep down",
    "/a/b/c/empty": b"",
}


def upload(client: httpx.Client, path: str, data: bytes) -> dict:
    response = client.post("/v1/files", params={"uploadType": "media", "path": path}, content=data)
    assert response.status_code == 201, response.text
    return response.json()


def content(client: httpx.Client, path: str) -> bytes | None:
    response = client.get("/v1/files/content", params={"path": path})
    return None if response.status_code == 404 else response.raise_for_status().content


def delete(client: httpx.Client, path: str, device: str | None = None) -> None:
    headers = {"X-Cirrus-Device": device} if device else {}
    body = {"path": path, "recursive": True}
    client.post("/v1/tree/delete", json=body, headers=headers).raise_for_status()


def items(client: httpx.Client) -> list[dict]:
    return client.get("/v1/trash").raise_for_status().json()["items"]


def make_tree(client: httpx.Client) -> None:
    for path, data in FILES.items():
        upload(client, path, data)
    client.post("/v1/tree/mkdir", json={"path": "/a/b/c/hollow"}).raise_for_status()


def test_a_deep_folder_round_trips_through_the_trash(new_user) -> None:
    alice = new_user(device="laptop")
    make_tree(alice)
    upload(alice, "/a/gone-before.txt", b"went first")
    delete(alice, "/a/gone-before.txt", device="phone")
    delete(alice, "/a")
    assert content(alice, "/a/b/c/d/e/deep.txt") is None
    listed = items(alice)
    assert [item["path"] for item in listed] == ["/a", "/a/gone-before.txt"]
    folder = listed[0]
    assert folder["type"] == "dir" and folder["device"] == "laptop"
    assert folder["files"] == len(FILES)
    assert folder["size"] == sum(len(data) for data in FILES.values())
    assert folder["deleted"].endswith("Z") and folder["deleted_ns"] > 0
    restored = alice.post("/v1/trash/restore", json={"id": folder["id"]})
    assert restored.status_code == 201, restored.text
    assert restored.json()["path"] == "/a"
    for path, data in FILES.items():
        assert content(alice, path) == data
    hollow = alice.get("/v1/tree/stat", params={"path": "/a/b/c/hollow"}).raise_for_status()
    assert hollow.json()["type"] == "dir"
    # The file another device deleted before stays in the trash, an item of its own.
    assert [(item["path"], item["device"]) for item in items(alice)] == [
        ("/a/gone-before.txt", "phone")
    ]
    assert content(alice, "/a/gone-before.txt") is None


def test_a_folder_emptied_then_deleted_is_one_item(new_user) -> None:
    """What `rm -rf` does through a mount: the content one by one, then the folder."""
    alice = new_user()
    make_tree(alice)
    for path in FILES:
        delete(alice, path)
    for folder in ("/a/b/c/d/e", "/a/b/c/d", "/a/b/c/hollow", "/a/b/c", "/a/b", "/a"):
        delete(alice, folder)
    (item,) = items(alice)
    assert (item["path"], item["files"]) == ("/a", len(FILES))
    alice.post("/v1/trash/restore", json={"id": item["id"]}).raise_for_status()
    for path, data in FILES.items():
        assert content(alice, path) == data


def test_restore_onto_a_taken_name_gets_a_restored_name(new_user) -> None:
    alice = new_user()
    upload(alice, "/docs/report.txt", b"first")
    delete(alice, "/docs/report.txt")
    upload(alice, "/docs/report.txt", b"second")
    delete(alice, "/docs/report.txt")
    upload(alice, "/docs/report.txt", b"third")
    for expected in ("/docs/report (restored).txt", "/docs/report (restored 2).txt"):
        item = items(alice)[0]
        answer = alice.post("/v1/trash/restore", json={"id": item["id"]}).raise_for_status()
        assert answer.json()["path"] == expected
    assert content(alice, "/docs/report.txt") == b"third"
    assert content(alice, "/docs/report (restored).txt") == b"second"
    assert content(alice, "/docs/report (restored 2).txt") == b"first"
    assert items(alice) == []


def test_restore_into_a_deleted_folder_makes_the_folder_again(new_user) -> None:
    alice = new_user()
    upload(alice, "/x/y/file.txt", b"kept")
    delete(alice, "/x/y/file.txt")
    delete(alice, "/x")
    file_item = next(item for item in items(alice) if item["path"] == "/x/y/file.txt")
    alice.post("/v1/trash/restore", json={"id": file_item["id"]}).raise_for_status()
    assert content(alice, "/x/y/file.txt") == b"kept"
    assert [item["path"] for item in items(alice)] == ["/x"]


def test_purge_one_item_or_all_and_refusals(new_user) -> None:
    alice, bob = new_user(), new_user()
    for name in ("p", "q", "r"):
        upload(alice, f"/{name}.txt", name.encode())
        delete(alice, f"/{name}.txt")
    first = items(alice)[0]
    assert bob.post("/v1/trash/restore", json={"id": first["id"]}).status_code == 404
    assert bob.post("/v1/trash/purge", json={"id": first["id"]}).status_code == 404
    assert alice.post("/v1/trash/purge", json={}).status_code == 400
    both = alice.post("/v1/trash/purge", json={"id": first["id"], "all": True})
    assert both.status_code == 400 and both.json()["error"]["code"] == "invalid_request"
    answer = alice.post("/v1/trash/purge", json={"id": first["id"]}).raise_for_status()
    assert answer.json() == {"purged": 1}
    assert first["id"] not in [item["id"] for item in items(alice)]
    history = alice.get("/v1/files/history", params={"path": first["path"]})
    assert history.status_code == 404
    again = alice.post("/v1/trash/restore", json={"id": first["id"]})
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    live = alice.get("/v1/tree/stat", params={"path": "/"}).raise_for_status().json()
    assert alice.post("/v1/trash/restore", json={"id": live["id"]}).status_code == 404
    assert alice.post("/v1/trash/purge", json={"all": True}).json() == {"purged": 2}
    assert items(alice) == []


def test_the_server_empties_the_trash_after_its_delay(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "server", extra_args=("--trash-days", "0", "--trash-interval", "0.2")
    )
    with server:
        token = server.create_user("alice")
        with server.client(token) as alice:
            upload(alice, "/old/file.bin", os.urandom(10_000))
            delete(alice, "/old")
            wait_until(lambda: items(alice) == [], timeout=10)
            history = alice.get("/v1/files/history", params={"path": "/old/file.bin"})
            assert history.status_code == 404
    assert server.errors_logged() == []


def test_an_item_lists_its_nodes_and_they_read_by_id(new_user) -> None:
    alice = new_user()
    make_tree(alice)
    upload(alice, "/a/gone-before.txt", b"went first")
    delete(alice, "/a/gone-before.txt", device="phone")
    delete(alice, "/a")
    folder = items(alice)[0]
    answer = alice.get(f"/v1/trash/{folder['id']}").raise_for_status().json()
    assert answer["item"] == folder
    nodes = answer["entries"]
    assert nodes[0]["id"] == folder["id"] and nodes[0]["path"] == "/a"
    seen = {nodes[0]["id"]}
    for node in nodes[1:]:  # parents before children, each where it was
        assert node["parent_id"] in seen and node["deleted"]
        seen.add(node["id"])
    files = {node["path"]: node for node in nodes if node["type"] == "file"}
    assert sorted(files) == sorted(FILES)  # not the item deleted on its own before
    assert "/a/b/c/hollow" in {node["path"] for node in nodes if node["type"] == "dir"}
    for path, data in FILES.items():
        params = {"id": files[path]["id"], "rev": files[path]["rev"]}
        assert alice.get("/v1/files/content", params=params).content == data
    for bad, status in [(10**12, 404), (files["/a/one.txt"]["id"], 404), (0, 400), ("x", 400)]:
        refused = alice.get(f"/v1/trash/{bad}")
        assert refused.status_code == status, refused.text
        assert refused.json()["error"]["code"] in ("not_found", "invalid_request")
