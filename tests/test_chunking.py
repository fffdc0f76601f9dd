"""Chunking a file that is being changed: the shared chunker never maps the file, so a file
cut short under it raises FileShrank instead of killing the process with SIGBUS."""

import subprocess
import sys
import textwrap
from pathlib import Path

from backend.protocol.chunking import WINDOW_BYTES

# Chunks a file and cuts it short after the first chunk; prints what happened.
CHUNK_WHILE_TRUNCATED = """
import os, sys
from backend.protocol.chunking import FileShrank, iter_file_chunks

path = sys.argv[1]
with open(path, "rb") as file:
    try:
        for number, chunk in enumerate(iter_file_chunks(file)):
            if number == 0:
                os.truncate(path, 4096)
    except FileShrank:
        print("shrank")
"""


def test_a_file_cut_short_while_chunked_raises_instead_of_killing(tmp_path: Path) -> None:
    path = tmp_path / "changing"
    path.write_bytes(bytes(range(256)) * (3 * WINDOW_BYTES // 256))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHUNK_WHILE_TRUNCATED), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "shrank"
