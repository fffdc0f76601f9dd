"""RemoteDrive, the mount's HTTP client, against a real `cirrus serve` process.

Faults a healthy server never produces (a corrupted block on the wire, a 502 from a proxy) come
from a small HTTP server on 127.0.0.1 that answers with canned responses.
"""

import http.server
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest
import trio
import zstandard

from backend.blocks import pack_batch
from backend.protocol.chunking import MAX_BLOCK_SIZE, iter_chunks
from backend.protocol.errors import (
    AlreadyExists,
    CirrusError,
    Forbidden,
    HashMismatch,
    InvalidPathError,
    InvalidRequest,
    NotADirectory,
    NotEmpty,
    NotFound,
    Unauthorized,
)
from backend.protocol.hashing import block_hash
from mountfs.remote import RemoteDrive, ServerUnreachable

DEADLINE = 30.0

Body = Callable[[RemoteDrive], Awaitable[object]]


def run(url: str, token: str, body: Body, **options: object) -> object:
    """Run `body` with a fresh RemoteDrive under trio, bounded in time, and close it."""

    async def main() -> object:
        with trio.fail_after(DEADLINE):
            async with RemoteDrive(url, token, **options) as remote:
                return await body(remote)

    return trio.run(main)


@pytest.fixture(scope="module")
def alice(shared_server) -> Callable[..., object]:
    """Run a body as alice on the module's server; each test works under its own paths."""
    token = shared_server.create_user("alice")
    return lambda body, **options: run(shared_server.url, token, body, **options)


def file_blocks(data: bytes) -> list[tuple[str, bytes]]:
    return [(block_hash(chunk.data), chunk.data) for chunk in iter_chunks(data)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- against the real server -------------------------------------------------------------------


def test_account_names_the_user(alice) -> None:
    account = alice(lambda remote: remote.account())
    assert account["user"] == "alice"
    assert isinstance(account["cursor"], int)


def test_wrong_token_is_unauthorized(shared_server) -> None:
    with pytest.raises(Unauthorized):
        run(shared_server.url, "not-a-token", lambda remote: remote.account())


def test_tree_operations(alice) -> None:
    async def body(remote: RemoteDrive) -> None:
        made = await remote.mkdir("/docs", mode=0o750, mtime_ns=1_000_000_000)
        assert (made["type"], made["mode"], made["mtime_ns"]) == ("dir", 0o750, 1_000_000_000)
        with pytest.raises(AlreadyExists):
            await remote.mkdir("/docs")
        deep = await remote.mkdir("/docs/a/b", parents=True)
        assert deep["path"] == "/docs/a/b"
        link = await remote.symlink("/docs/link", "a/b")
        assert (link["type"], link["target"]) == ("symlink", "a/b")
        names = [entry["name"] for entry in await remote.list_dir("/docs")]
        assert names == ["a", "link"]
        changed = await remote.setattr("/docs", mode=0o700, mtime_ns=5)
        assert (changed["mode"], changed["mtime_ns"]) == (0o700, 5)
        tagged = await remote.set_xattr("/docs", "user.color", b"red")
        assert tagged["xattrs"] == {"user.color": "cmVk"}
        untagged = await remote.set_xattr("/docs", "user.color", None)
        assert untagged["xattrs"] == {}
        with pytest.raises(NotFound):
            await remote.set_xattr("/docs", "user.color", None)
        assert (await remote.stat("/docs/a"))["type"] == "dir"

    alice(body)


def test_move_and_delete(alice) -> None:
    async def body(remote: RemoteDrive) -> None:
        await remote.mkdir("/x/inner", parents=True)
        await remote.mkdir("/y")
        with pytest.raises(AlreadyExists):
            await remote.move("/x", "/y", mode="noreplace")
        moved = await remote.move("/x", "/y")
        assert moved["node"]["path"] == "/y"
        assert moved["replaced"]["name"] == "y"
        with pytest.raises(NotFound):
            await remote.stat("/x")
        with pytest.raises(NotEmpty):
            await remote.delete("/y")
        deleted = await remote.delete("/y", recursive=True)
        assert len(deleted) == 2
        with pytest.raises(NotFound):
            await remote.stat("/y/inner")
        with pytest.raises(Forbidden):
            await remote.delete("/", recursive=True)

    alice(body)


def test_bad_paths_are_refused(alice) -> None:
    async def body(remote: RemoteDrive) -> None:
        with pytest.raises(InvalidPathError):
            await remote.stat("/a/../b")
        with pytest.raises(InvalidPathError):
            await remote.mkdir("relative")
        with pytest.raises(InvalidPathError):
            await remote.stat("/bad-\udcff-name")  # undecodable name from the kernel
        with pytest.raises(NotFound):
            await remote.stat("/nothing-here")

    alice(body)


def test_upload_commit_and_read_back(alice) -> None:
    data = os.urandom(1_500_000)
    blocks = file_blocks(data)
    hashes = [name for name, _ in blocks]

    async def body(remote: RemoteDrive) -> None:
        assert sorted(await remote.missing_blocks(hashes)) == sorted(set(hashes))
        layout = [(name, len(chunk)) for name, chunk in blocks]
        answer = await remote.commit("/dir/f.bin", None, len(data), layout, mode=0o600)
        assert (answer["status"], answer["conflict"]) == ("pending", False)
        assert sorted(answer["missing"]) == sorted(set(hashes))
        for name, chunk in blocks:
            await remote.put_block(name, chunk)
        node = await remote.stat("/dir/f.bin")
        assert (node["status"], node["size"], node["mode"]) == ("uploaded", len(data), 0o600)
        assert await remote.missing_blocks(hashes) == []
        listed = await remote.block_list(node["id"])
        assert [(b["hash"], b["size"]) for b in listed["blocks"]] == layout
        assert await remote.get_block(hashes[0]) == blocks[0][1]
        assert await remote.download("/dir/f.bin") == data
        with pytest.raises(NotADirectory):
            await remote.list_dir("/dir/f.bin")

    alice(body)


def test_commit_is_idempotent_and_stale_base_makes_a_conflicted_copy(alice) -> None:
    content = b"hello cirrus"
    layout = [(block_hash(content), len(content))]

    async def body(remote: RemoteDrive) -> None:
        await remote.put_block(layout[0][0], content)
        first = await remote.commit("/notes.txt", None, len(content), layout, commit_id="c1")
        again = await remote.commit("/notes.txt", None, len(content), layout, commit_id="c1")
        assert again["rev"] == first["rev"]
        assert first["status"] == "uploaded"
        clash = await remote.commit("/notes.txt", None, len(content), layout)
        assert clash["conflict"] is True
        assert "laptop's conflicted copy" in clash["path"]
        assert await remote.download(clash["path"]) == content

    alice(body, device="laptop")


def test_block_errors(alice) -> None:
    good, other = b"good block", b"other block"

    async def body(remote: RemoteDrive) -> None:
        with pytest.raises(HashMismatch):
            await remote.put_block(block_hash(good), other)
        with pytest.raises(NotFound):
            await remote.get_block(block_hash(good))
        with pytest.raises(InvalidRequest):
            await remote.get_block("../account")
        await remote.put_block(block_hash(good), good)
        await remote.put_block(block_hash(good), good)  # idempotent
        assert await remote.get_block(block_hash(good)) == good

    alice(body)


def test_blocks_travel_in_batches(alice) -> None:
    blocks = [(block_hash(data), data) for data in (os.urandom(9_000 + i) for i in range(70))]
    hashes = [name for name, _data in blocks]

    async def body(remote: RemoteDrive) -> None:
        await remote.put_blocks(blocks[:64])
        await remote.put_blocks(blocks[64:])
        assert await remote.missing_blocks(hashes) == []
        fetched = await remote.get_blocks([*reversed(hashes), hashes[0]])  # over 64, repeated
        assert fetched == dict(blocks)
        liar = (block_hash(b"claimed"), b"sent instead")
        with pytest.raises(HashMismatch):
            await remote.put_blocks([(block_hash(b"fine"), b"fine"), liar])
        assert await remote.missing_blocks([block_hash(b"fine")]) == [block_hash(b"fine")]
        with pytest.raises(NotFound):
            await remote.get_blocks([hashes[0], liar[0]])
        with pytest.raises(InvalidRequest):
            await remote.put_blocks(blocks[:65])

    alice(body)


def test_missing_blocks_are_asked_in_batches(alice) -> None:
    hashes = [block_hash(i.to_bytes(4, "big")) for i in range(22_000)]
    missing = alice(lambda remote: remote.missing_blocks(hashes))
    assert sorted(missing) == sorted(hashes)


def test_changes_poll_and_snapshot(alice) -> None:
    async def body(remote: RemoteDrive) -> None:
        start = (await remote.account())["cursor"]
        woke: list[dict] = []

        async def waiter() -> None:
            woke.append(await remote.poll(start, timeout=20))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(0.2)
            with trio.fail_after(5):  # the poll returns at once, not after 20 s
                await remote.mkdir("/fresh")
                while not woke:
                    await trio.sleep(0.01)
        assert woke[0]["changes"] is True and woke[0]["cursor"] > start
        changes = await remote.changes(start)
        assert [entry["node"]["path"] for entry in changes["entries"]] == ["/fresh"]
        assert changes["has_more"] is False
        snapshot = await remote.snapshot(0)
        assert "/fresh" in {node["path"] for node in snapshot["nodes"]}

    alice(body)


def test_idle_poll_outlives_the_client_timeout(alice) -> None:
    async def body(remote: RemoteDrive) -> dict:
        cursor = (await remote.account())["cursor"]
        return await remote.poll(cursor, timeout=2)

    answer = alice(body, timeout=1.0)
    assert answer["changes"] is False


def test_nothing_listening_is_unreachable() -> None:
    with pytest.raises(ServerUnreachable):
        run(f"http://127.0.0.1:{free_port()}", "token", lambda remote: remote.account())


# -- against a misbehaving server --------------------------------------------------------------

Canned = tuple[int, str, bytes]


@contextmanager
def canned_server(answer: Canned) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 giving every request the same (status, type, body)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = answer
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.do_GET()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def ask(answer: Canned, body: Body) -> object:
    with canned_server(answer) as url:
        return run(url, "token", body)


def stat_a(remote: RemoteDrive) -> Awaitable[dict]:
    return remote.stat("/a")


BLOCK = b"the real block"


def get_real_block(remote: RemoteDrive) -> Awaitable[bytes]:
    return remote.get_block(block_hash(BLOCK))


@pytest.mark.parametrize(
    "frame",
    [
        zstd(b"not the block that was asked for"),
        b"this is not zstd at all",
        zstd(bytes(MAX_BLOCK_SIZE + 1)),  # a decompression bomb
        zstandard.ZstdCompressor(write_content_size=False).compress(bytes(MAX_BLOCK_SIZE + 1)),
    ],
    ids=["wrong-content", "not-zstd", "too-large", "too-large-unsized"],
)
def test_a_bad_block_on_the_wire_is_refused(frame: bytes) -> None:
    with pytest.raises(HashMismatch):
        ask((200, "application/zstd", frame), get_real_block)


def test_a_good_block_on_the_wire_is_accepted() -> None:
    assert ask((200, "application/zstd", zstd(BLOCK)), get_real_block) == BLOCK


def get_real_blocks(remote: RemoteDrive) -> Awaitable[dict[str, bytes]]:
    return remote.get_blocks([block_hash(BLOCK)])


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (pack_batch([(block_hash(BLOCK), zstd(b"another block"))]), HashMismatch),
        (pack_batch([(block_hash(BLOCK), b"not zstd")]), HashMismatch),
        (pack_batch([(block_hash(b"other"), zstd(b"other"))]), ServerUnreachable),
        (pack_batch([(block_hash(BLOCK), zstd(BLOCK))] * 2), ServerUnreachable),
        (pack_batch([(block_hash(BLOCK), zstd(BLOCK))])[:-4], ServerUnreachable),
        (b"", ServerUnreachable),
    ],
    ids=["wrong-content", "not-zstd", "other-block", "extra-block", "truncated", "empty"],
)
def test_a_bad_batch_on_the_wire_is_refused(answer: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        ask((200, "application/x-cirrus-blocks", answer), get_real_blocks)


def test_a_good_batch_on_the_wire_is_accepted() -> None:
    good = pack_batch([(block_hash(BLOCK), zstd(BLOCK))])
    assert ask((200, "application/x-cirrus-blocks", good), get_real_blocks) == {
        block_hash(BLOCK): BLOCK
    }


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_mean_unreachable(status: int) -> None:
    with pytest.raises(ServerUnreachable):
        ask((status, "text/html", b"<h1>Bad Gateway</h1>"), stat_a)


def test_garbled_answers_mean_unreachable() -> None:
    with pytest.raises(ServerUnreachable):
        ask((200, "text/html", b"<h1>captive portal</h1>"), stat_a)


def test_a_4xx_without_an_error_body_is_still_an_error() -> None:
    with pytest.raises(CirrusError) as caught:
        ask((404, "text/html", b"<h1>Not Found</h1>"), stat_a)
    assert not isinstance(caught.value, ServerUnreachable)
    assert "404" in str(caught.value)
