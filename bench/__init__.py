"""Hand-run benchmarks of Cirrus (not part of the test suite)."""
