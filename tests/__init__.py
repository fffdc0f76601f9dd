"""The Cirrus test suite (a package, so tests share helpers as `tests.NAME`)."""
