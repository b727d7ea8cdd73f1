#!/usr/bin/env bash
# make pi-check: run the edge runtime on emulated Raspberry Pi OS (bookworm, aarch64, Python 3.11) under
# qemu-user and compare it with x86. Everything is in tools/pi_check/ (python -m tools.pi_check --help);
# this picks the python.
# Needs: sudo apt-get install qemu-user-static debootstrap libportaudio2
# The arm64 root and the Pi venv are cached in ${AURICLE_PI_CACHE:-~/.cache/auricle/pi-check}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PI_CHECK_PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
exec "$PY" -m tools.pi_check "$@"
