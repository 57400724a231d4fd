# Shared by test.sh, dev.sh and bench.sh: installs what the repo pins. The local services
# start from the Python package stack/, one way for the tests, the benchmark and dev.sh.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

_stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }

# A virtualenv at .venv from requirements.txt, rebuilt only when the pins change.
ensure_venv() {
  local want
  want=$(_stamp "$ROOT/requirements.txt" "$ROOT/functions/requirements.txt")
  if [ ! -x "$ROOT/.venv/bin/python" ] || [ "$(cat "$ROOT/.venv/.stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing Python packages into .venv" >&2
    python3 -m venv "$ROOT/.venv"
    "$ROOT/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/requirements.txt"
    echo "$want" > "$ROOT/.venv/.stamp"
  fi
}

# `npm ci` in a folder with a lockfile, only when the lockfile changed.
ensure_npm() {
  local dir=$1 want
  want=$(_stamp "$ROOT/$dir/package-lock.json")
  if [ "$(cat "$ROOT/$dir/node_modules/.stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing npm packages in $dir" >&2
    npm ci --prefix "$ROOT/$dir" --no-audit --no-fund --loglevel=error >&2
    echo "$want" > "$ROOT/$dir/node_modules/.stamp"
  fi
}

# A Debian package, installed when its command is missing.
ensure_apt() {
  local command=$1 package=$2
  command -v "$command" >/dev/null && return 0
  echo "== installing $package" >&2
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq "$package" >/dev/null
}

# bench.sh's driver, started in a process group of its own, so that stop_all leaves nothing
# running: the groups the driver started are added to CHILD_GROUPS from its BENCH_PGID_FILE.
CHILD_GROUPS=()
start_group() {
  setsid "$@" &
  CHILD_GROUPS+=("$!")
}
stop_all() {
  local pid
  for pid in "${CHILD_GROUPS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${CHILD_GROUPS[@]}"; do
    for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  CHILD_GROUPS=()
}
