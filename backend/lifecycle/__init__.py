"""Background jobs that keep a drive's storage in bounds (run inside `cirrus serve`): block
garbage collection, retention, the trash and the change journal."""
