"""Reading the log of a process a test started (server or mount)."""

from pathlib import Path


def tail(path: Path, lines: int) -> str:
    """The last lines of a log, for assertion messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def tracebacks(path: Path) -> list[str]:
    """The log lines that start a traceback: a bug in the process, whatever the test saw."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.startswith("Traceback")]
