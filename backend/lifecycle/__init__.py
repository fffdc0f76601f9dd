"""Background jobs that keep a drive's storage in bounds (run inside `cirrus serve`)."""
