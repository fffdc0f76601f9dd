"""The small-files corpus: a real Django source distribution, fetched once into a user cache.

It is decompressed to a plain .tar once, so untar timings measure the filesystem and not gzip.
The tarball is never part of the repository.
"""

import gzip
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

DJANGO = "django==5.0.6"


def fetch_tarball(cache: Path) -> Path:
    """The uncompressed Django sdist tar in `cache`, downloading it with pip the first time."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("Django-*.tar.gz")) + sorted(cache.glob("django-*.tar.gz"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                "--quiet",
                DJANGO,
                "-d",
                str(cache),
            ],
            check=True,
        )
        found = sorted(cache.glob("[Dd]jango-*.tar.gz"))
    plain = found[-1].with_suffix("")
    if not plain.exists():
        with gzip.open(found[-1]) as src, plain.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return plain


def manifest(tar: Path, prefix: str) -> dict[str, int]:
    """Regular files in the tar, as paths under `prefix` → size (what the backend must hold)."""
    with tarfile.open(tar) as archive:
        return {f"{prefix}/{m.name}": m.size for m in archive.getmembers() if m.isfile()}
