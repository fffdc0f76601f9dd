"""The server's metadata database: schema (models), engine set-up and migrations (engine)."""

from backend.db.engine import create_engine_for, migrate, session_factory, writer

__all__ = ["create_engine_for", "migrate", "session_factory", "writer"]
