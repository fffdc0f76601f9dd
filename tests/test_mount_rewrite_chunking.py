"""The uploader's chunking of a dirty copy that the mount keeps changing.

Its chunks must be those of the whole content cut at once (the same block names as the
server's chunking, so unchanged parts deduplicate), and a copy truncated while it is being
chunked must make the upload start again, never take the mount process down.
"""

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from backend.protocol.chunking import MAX_CHUNK, WINDOW_BYTES, chunk_file, iter_chunks


def content(size: int, seed: int) -> bytes:
    """Random bytes with repeated stretches, so some cut points recur."""
    rng = random.Random(seed)
    piece = rng.randbytes(MAX_CHUNK // 3)
    parts, length = [], 0
    while length < size:
        part = piece if rng.random() < 0.3 else rng.randbytes(rng.randrange(1, MAX_CHUNK))
        parts.append(part)
        length += len(part)
    return b"".join(parts)[:size]


@pytest.mark.parametrize(
    "size", [0, 1, 4096, WINDOW_BYTES - 1, WINDOW_BYTES, WINDOW_BYTES + 1, 3 * WINDOW_BYTES + 77]
)
def test_windows_cut_the_same_chunks_as_the_whole_content(tmp_path: Path, size: int) -> None:
    data = content(size, seed=size)
    path = tmp_path / "dirty"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        found = [(chunk.offset, chunk.data) for chunk in chunk_file(fd, size)]
    finally:
        os.close(fd)
    assert found == [(chunk.offset, chunk.data) for chunk in iter_chunks(data)]


# Uploads a file (to a stand-in server that lacks every block) while another thread keeps
# cutting it short and growing it again, as fsx does to an open file; exits 0 if it survives.
UPLOAD_WHILE_TRUNCATED = """
import os, sys, threading, trio
from cache.blockcache import BlockCache
from mountfs.upload import ContentChanged, upload_blocks

class Server:
    async def missing_blocks(self, names): return names
    async def put_blocks(self, blocks): pass

path, cache = sys.argv[1], sys.argv[2]
size = os.path.getsize(path)
done = threading.Event()

def truncate_again_and_again():
    while not done.is_set():
        os.truncate(path, 4096)
        os.truncate(path, size)

async def main():
    for _ in range(60):
        try:
            await upload_blocks(Server(), BlockCache(cache, 1 << 30), path, trio.CapacityLimiter(2))
        except ContentChanged:
            pass

thread = threading.Thread(target=truncate_again_and_again)
thread.start()
try:
    trio.run(main)
finally:
    done.set()
    thread.join()
"""


def test_a_copy_truncated_during_its_upload_never_kills_the_process(tmp_path: Path) -> None:
    path = tmp_path / "dirty"
    path.write_bytes(content(8 << 20, seed=1))
    answer = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(UPLOAD_WHILE_TRUNCATED),
            str(path),
            str(tmp_path / "blocks"),
        ],
        capture_output=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert answer.returncode == 0, answer.stderr.decode()[-2000:]
