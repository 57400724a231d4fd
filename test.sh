#!/usr/bin/env bash
# Installs what the tests need, then runs ruff, mypy, shellcheck and every test against real local
# services (the Firestore, Storage and Auth emulators, the Gemini stand-in and the function are
# started by the test fixtures through stack/, on free ports, and stopped at the end).
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
ensure_venv
ensure_npm tests/js          # the ai package and the Firestore rules tests
ensure_npm demo              # the demo page, the Auth emulator (firebase-tools)
ensure_apt shellcheck shellcheck
ensure_apt chromium chromium # the browser test drives Debian's Chromium, never a download

echo "== ruff, mypy, shellcheck"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
shellcheck -x ./*.sh scripts/*.sh

echo "== unit tests (no processes)"
.venv/bin/python -m pytest tests/unit "$@"

echo "== integration tests (emulators, stand-in, AI SDK readers, Chromium)"
exec .venv/bin/python -m pytest --ignore=tests/unit "$@"
