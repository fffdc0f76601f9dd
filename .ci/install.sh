#!/usr/bin/env bash
# Installs everything Cirrus needs on a fresh Debian machine: system packages, then the Python
# package with its test extras in ./.venv. Run as root (or with sudo) from the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv \
        postgresql haproxy systemd git rsync sqlite3 >/dev/null
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'

# mount(8) runs `cirrus` for `-t fuse.cirrus` through mount.fuse3, which searches PATH.
ln -sf "$PWD/.venv/bin/cirrus" /usr/local/bin/cirrus
echo "cirrus installed: $(.venv/bin/cirrus --version)"
