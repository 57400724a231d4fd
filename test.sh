#!/usr/bin/env bash
# Installs what the tests need, then runs ruff and every test against real local services
# (the Firestore emulator and the Gemini stand-in are started by the test fixtures).
set -euo pipefail
cd "$(dirname "$0")"

stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }

# Python: a virtualenv at .venv, rebuilt only when the pins change.
want=$(stamp requirements.txt functions/requirements.txt)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.stamp 2>/dev/null)" != "$want" ]; then
  echo "== installing Python packages into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > .venv/.stamp
fi

# JavaScript: the pinned packages of the JS-side tests (the ai package, Firestore rules tests).
for dir in tests/js; do
  want=$(stamp "$dir/package-lock.json")
  if [ "$(cat "$dir/node_modules/.stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing npm packages in $dir"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
    echo "$want" > "$dir/node_modules/.stamp"
  fi
done

# Debian tools the tests call: shellcheck for deploy.sh.
if ! command -v shellcheck >/dev/null; then
  echo "== installing shellcheck"
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq shellcheck) >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq shellcheck >/dev/null
  fi
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== pytest"
exec .venv/bin/python -m pytest "$@"
