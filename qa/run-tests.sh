#!/usr/bin/env bash
# README command 2: run every test on a fresh Debian 12 machine (as root).
# Installs Ceph (Debian's Pacific packages) and tox, then runs the unit
# tests, linters, the real-cluster integration tests and the docs build.
set -euo pipefail
cd "$(dirname "$0")/.."
/usr/bin/python3 qa/standalone/cluster.py install --dashboard
if ! command -v tox >/dev/null 2>&1; then
    python3 -m pip install --quiet 'tox>=4'
fi
exec tox -e "${TOXENV:-py3,flake8,mypy,integration,docs}" -- "$@"
