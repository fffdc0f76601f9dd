"""Block stores: where encrypted blocks rest (local directory, memory, S3, replicated, archive)."""
