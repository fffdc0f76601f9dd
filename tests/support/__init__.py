"""Helpers the tests share: a real `cirrus serve` process (server.py)."""
