"""Background jobs on a drive's stored blocks (run inside `cirrus serve`): block garbage
collection, retention, the trash and the change journal; replication between regions and
moves to the archive."""
