"""Every unit shipped in systemd/ passes `systemd-analyze verify`, and the shipped server
settings file is one `cirrus serve --config` accepts."""

import shutil
import subprocess
from pathlib import Path

import pytest

from backend.config_file import read_config_file

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNIT_SUFFIXES = {".service", ".socket", ".mount", ".automount", ".timer", ".path", ".target"}
# A template is verified as one of its instances, named as the docs name them.
INSTANCES = {"cirrus-server@.service": "8081", "cirrus-mount@.service": "alice"}
ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def shipped_units() -> list[Path]:
    return sorted(p for p in SYSTEMD_DIR.iterdir() if p.suffix in UNIT_SUFFIXES)


def verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """Verify a copy named as systemd would load it (a template as one of its instances)."""
    name = unit.name
    if name in INSTANCES:
        name = name.replace("@.", f"@{INSTANCES[name]}.")
    copy = tmp_path / name
    shutil.copyfile(unit, copy)
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )


def test_every_template_has_an_instance_to_verify() -> None:
    templates = {p.name for p in shipped_units() if "@." in p.name}
    assert templates == set(INSTANCES)


@needs_analyze
@pytest.mark.parametrize("unit", shipped_units(), ids=lambda p: p.name)
def test_systemd_analyze_verifies_the_unit(unit: Path, tmp_path: Path) -> None:
    result = verify(unit, tmp_path)
    assert clean(result), result.stderr


def clean(result: subprocess.CompletedProcess) -> bool:
    """No error and no warning: systemd ignores a setting it cannot parse, exit status 0."""
    return result.returncode == 0 and result.stderr.strip() == ""


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a bad setting in the server template is reported."""
    broken = tmp_path / "src" / "cirrus-server@.service"
    broken.parent.mkdir()
    text = (SYSTEMD_DIR / "cirrus-server@.service").read_text()
    broken.write_text(text.replace("Restart=on-failure", "Restart=sometimes"))
    result = verify(broken, tmp_path)
    assert not clean(result) and "sometimes" in result.stderr


def test_the_server_template_drains_and_restarts_as_documented() -> None:
    text = (SYSTEMD_DIR / "cirrus-server@.service").read_text()
    for line in (
        "Restart=on-failure",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "User=cirrus",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "--config /etc/cirrus/server.toml --port %i",
    ):
        assert line in text


def test_the_shipped_server_settings_are_accepted() -> None:
    settings = read_config_file(SYSTEMD_DIR / "server.toml.example")
    assert settings["db_url"].startswith("postgresql+psycopg://")
    assert settings["drain_timeout_s"] == 10.0
