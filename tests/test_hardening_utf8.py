"""Invalid UTF-8 in a URL is refused, never turned into U+FFFD (which made two names one)."""

import httpx


def code(answer: httpx.Response) -> str:
    assert answer.status_code == 400, answer.text
    return answer.json()["error"]["code"]


def test_invalid_utf8_in_a_query_path_is_invalid_path(new_user) -> None:
    client: httpx.Client = new_user()
    for raw in ("/c%ff", "/c%fe", "/%c3%28", "/ok/%80x"):
        answer = client.post(f"/v1/files?uploadType=media&path={raw}", content=b"data")
        assert code(answer) == "invalid_path"
        assert code(client.get(f"/v1/tree/stat?path={raw}")) == "invalid_path"
        assert code(client.get(f"/v1/files/content?path={raw}")) == "invalid_path"
    assert client.get("/v1/tree/list", params={"path": "/"}).json()["entries"] == []
    # valid percent-encoded UTF-8 still works
    answer = client.post("/v1/files?uploadType=media&path=/caf%C3%A9", content=b"x")
    assert answer.status_code == 201, answer.text
    assert answer.json()["path"] == "/café"


def test_invalid_utf8_elsewhere_in_the_url_is_refused(new_user) -> None:
    client: httpx.Client = new_user()
    assert code(client.get("/v1/uploads/%ff%fe")) == "invalid_path"
    assert code(client.get("/v1/changes?cursor=%ff")) == "invalid_request"
    assert code(client.get("/v1/tree/stat?pa%ffth=/x&path=/")) == "invalid_request"


def test_a_lone_surrogate_in_a_json_path_is_invalid_path(new_user) -> None:
    client: httpx.Client = new_user()
    body = b'{"path": "/c\\udcff"}'
    answer = client.post(
        "/v1/tree/mkdir", content=body, headers={"content-type": "application/json"}
    )
    assert code(answer) == "invalid_path"
