#!/usr/bin/env bash
# Installs what the tests need, then runs ruff and every test against real local services
# (the Firestore emulator and the Gemini stand-in are started by the test fixtures).
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
ensure_venv
ensure_npm tests/js          # the ai package and the Firestore rules tests
ensure_apt shellcheck shellcheck

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== pytest"
exec .venv/bin/python -m pytest "$@"
