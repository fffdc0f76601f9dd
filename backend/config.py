"""Where a Cirrus server keeps its state, resolved once from the command line.

Everything lives under one data directory by default (metadata database, blocks, master key,
upload spools), so `cirrus serve` works with no other service; `--db` and `--blocks` move the
metadata to PostgreSQL and the blocks to another store without changing anything else.
"""

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/cirrus, falling back to ~/.local/share/cirrus as the XDG spec says."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "cirrus"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path
    db_url: str
    blocks_url: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    log_level: str = "info"
    # Block lifecycle (docs/blocks.md, Regions and tiers).
    replication_interval_s: float = 1.0  # idle wait of the replication queue's drain
    archive_url: str | None = None  # cold store; None: no archive tier
    archive_after_days: float | None = None  # archive blocks unread this long; None: never
    archive_old_revisions: bool = False  # archive blocks only old revisions/deleted files use
    archive_interval_s: float = 3600.0  # time between archive passes

    @classmethod
    def build(
        cls,
        data_dir: Path | None = None,
        db_url: str | None = None,
        blocks_url: str | None = None,
        **listen: object,
    ) -> "ServerConfig":
        """Fill every unset location from the data directory."""
        data = Path(data_dir or default_data_dir()).expanduser().absolute()
        return cls(
            data_dir=data,
            db_url=db_url or f"sqlite:///{data / 'metadata.db'}",
            blocks_url=blocks_url or f"file://{data / 'blocks'}",
            **listen,  # type: ignore[arg-type]
        )

    @property
    def master_key_path(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    def prepare(self) -> None:
        """Create the private data directories (0700: they hold keys and user data)."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.uploads_dir.mkdir(mode=0o700, exist_ok=True)
