"""Names a mount publishes to other programs (the user CLI, scripts), in a module light
enough for any command to import without loading FUSE."""

import os

# The read-only folder at the mount root (mountfs.virtual).
VIRTUAL_DIR = ".cirrus"
# A file's sync state: synced, pending or conflict (mountfs.vfs).
STATUS_XATTR = "user.cirrus.status"


def trash_names(items: list[dict]) -> dict[str, dict]:
    """The name of each trash item (GET /v1/trash, most recently deleted first) in the
    mount's `.cirrus/trash/`: its own name, or `STEM (item ID).EXT` for an item deleted
    before another of the same name."""
    named: dict[str, dict] = {}
    for item in items:
        name = item["name"]
        if name in named:
            stem, ext = (name, "") if item["type"] == "dir" else os.path.splitext(name)
            name = f"{stem} (item {item['id']}){ext}"
        named[name] = item
    return named
