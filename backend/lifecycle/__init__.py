"""Background work on stored blocks: replication between regions, moves to the archive."""
