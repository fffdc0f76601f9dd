"""Names other clients can hold: the server keeps names in NFC (an NFD name is the same
node), refuses control characters, and keeps case-only variants apart (documented)."""

import unicodedata

import httpx
import pytest

NFC = unicodedata.normalize("NFC", "/café")
NFD = unicodedata.normalize("NFD", "/café")


def _upload(client: httpx.Client, path: str, data: bytes) -> httpx.Response:
    return client.post("/v1/files", params={"uploadType": "media", "path": path}, content=data)


def test_nfd_and_nfc_forms_name_one_file(new_user) -> None:
    client: httpx.Client = new_user()
    assert NFC != NFD
    first = _upload(client, NFD, b"one")
    assert first.status_code == 201 and first.json()["path"] == NFC
    second = _upload(client, NFC, b"two")
    assert second.json()["id"] == first.json()["id"] and second.json()["rev"] == 2
    names = [e["name"] for e in client.get("/v1/tree/list", params={"path": "/"}).json()["entries"]]
    assert names == [NFC[1:]]
    clash = client.post("/v1/tree/mkdir", json={"path": NFD})
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "exists"
    moved = client.post("/v1/tree/move", json={"from": NFD, "to": "/b" + NFD[1:]})
    assert moved.status_code == 200 and moved.json()["node"]["path"] == "/b" + NFC[1:]


@pytest.mark.parametrize("name", ["a\x01b", "tab\there", "del\x7f", "nel\x85", "line\nfeed"])
def test_control_characters_are_refused(new_user, name: str) -> None:
    client: httpx.Client = new_user()
    answer = _upload(client, f"/{name}", b"x")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_path"
    answer = client.post("/v1/tree/mkdir", json={"path": f"/{name}"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_path"
    assert client.get("/v1/tree/list", params={"path": "/"}).json()["entries"] == []


def test_case_variants_are_distinct_names(new_user) -> None:
    client: httpx.Client = new_user()
    assert _upload(client, "/Readme", b"a").status_code == 201
    assert _upload(client, "/README", b"b").status_code == 201
    names = [e["name"] for e in client.get("/v1/tree/list", params={"path": "/"}).json()["entries"]]
    assert sorted(names) == ["README", "Readme"]
