"""The metadata service: users, the drive tree, revisions, block references, the change journal."""
