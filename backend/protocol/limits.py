"""Limits of the drive that clients check before asking (the server checks them again)."""

# The largest file a drive holds (uploads and commits refuse more with 413 too_large; the
# mount answers EFBIG at once).
MAX_FILE_SIZE = 64 * 1024**3
