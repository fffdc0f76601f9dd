"""Where a Cirrus server keeps its state, resolved once from the command line.

Everything lives under one data directory by default (metadata database, blocks, master key,
upload spools), so `cirrus serve` works with no other service; `--db` and `--blocks` move the
metadata to PostgreSQL and the blocks to another store without changing anything else.

A `--config` TOML file (backend/config_file.py) sets any field below by its name, and a
`cirrus serve` flag whose argparse dest is a field's name (default None) overrides it.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from backend.permissions import make_private

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
    # The master key's file, shared by every server of a drive; None: $CIRRUS_MASTER_KEY,
    # else DATA/master.key (created at the first start).
    key_file: Path | None = None
    # Older master keys this server still reads blocks with, during a key rotation.
    read_key_files: tuple[Path, ...] = ()
    # After SIGTERM or SIGHUP, requests in flight get this long to finish (long polls are
    # answered at once); the load balancer's and systemd's stop timeouts must be longer.
    drain_timeout_s: float = 10.0
    # The trash keeps deleted files and folders this many days, then purges them; the job
    # looks every trash_interval_s seconds.
    trash_days: float = 30.0
    trash_interval_s: float = 3600.0
    # The change journal keeps entries some known device has not read, but none older than
    # journal_days; trimmed every journal_interval_s seconds.
    journal_days: float = 30.0
    journal_interval_s: float = 3600.0
    # Storage lifecycle (docs/blocks.md): garbage collection every gc_interval_s seconds
    # (0: never in the background) of blocks unreferenced for gc_grace_s; retention of each
    # file's history: at most max_revisions, none older than max_history_s (None: no age
    # limit), thinned by `thinning` (tiers AGE:EVERY, oldest last; "all" keeps every one).
    gc_interval_s: float = 3600.0
    gc_grace_s: float = 86400.0
    max_revisions: int = 100
    max_history_s: float | None = None
    thinning: str = "24h:all,7d:1h,30d:1d"
    # Limits against hostile and careless clients (docs/architecture.md, Security).
    upload_sessions_per_user: int = 32
    upload_spool_bytes_per_user: int = 64 * 1024**3
    upload_lifetime_s: int = 24 * 3600
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 10_000
    requests_per_user: int = 32

    def __post_init__(self) -> None:
        """Refuse values a flag's parser would have refused (they may come from a file)."""
        if type(self.port) is not int or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port!r}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if not 0 <= self.drain_timeout_s <= 3600:
            raise ValueError(f"drain_timeout_s must be 0-3600 seconds, got {self.drain_timeout_s}")

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
        make_private(self.data_dir)
        self.uploads_dir.mkdir(mode=0o700, exist_ok=True)
