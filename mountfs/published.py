"""Names a mount publishes to other programs (the user CLI, scripts), in a module light
enough for any command to import without loading FUSE."""

# The read-only folder at the mount root (mountfs.virtual).
VIRTUAL_DIR = ".cirrus"
# A file's sync state: synced, pending or conflict (mountfs.vfs).
STATUS_XATTR = "user.cirrus.status"
