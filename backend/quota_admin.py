"""`cirrus admin set-quota NAME SIZE`: the body of the command (cli.py registers it).

Sizes are bytes, or a number with K, M, G, T or P (powers of 1024, as `df -h` shows them,
an optional trailing "B" or "iB" allowed): `10G`, `1.5T`, `500MiB`. `none` removes the
quota.
"""

import re

from backend.metadata.service import MetadataService

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?", re.IGNORECASE)
MAX_QUOTA = 2**63 - 1


def parse_size(text: str) -> int | None:
    """Bytes for a size like `10G`; None for `none`; ValueError for anything else."""
    if text.strip().lower() == "none":
        return None
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (try 10G, 500M, 1048576 or none)")
    size = int(float(match.group(1)) * UNITS[match.group(2).upper()])
    if size > MAX_QUOTA:
        raise ValueError(f"a quota is at most {MAX_QUOTA} bytes")
    return size


def set_quota(metadata: MetadataService, name: str, text: str) -> str:
    """Set the quota; what to tell the operator. ValueError for a bad size or user."""
    quota = parse_size(text)
    if not metadata.set_quota(name, quota):
        raise ValueError(f"no user named {name!r}")
    if quota is None:
        return f"user {name} has no quota"
    return f"quota of user {name}: {quota} bytes"
