# Shared by test.sh, dev.sh and bench.sh: installs what the repo pins, starts local services.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EMULATOR_JAR=/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar

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

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() {
  local url=$1 seconds=${2:-30} i
  for ((i = 0; i < seconds * 10; i++)); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$url did not answer within ${seconds}s" >&2
  return 1
}

# Children started in their own process group, so that stop_all leaves nothing listening.
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

start_firestore_emulator() {
  local port=$1 log=$2
  if [ -f "$EMULATOR_JAR" ]; then
    start_group java -cp "$EMULATOR_JAR" com.google.cloud.datastore.emulator.firestore.CloudFirestore \
      start --host=127.0.0.1 --port="$port" >"$log" 2>&1
  else
    start_group gcloud emulators firestore start --host-port="127.0.0.1:$port" >"$log" 2>&1
  fi
  wait_http "http://127.0.0.1:$port/" 60
}

# gcp-storage-emulator (from requirements.txt) in memory, with the bucket made; ready when the
# bucket answers. Give google-cloud-storage STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT.
start_storage_emulator() {
  local port=$1 bucket=$2 log=$3
  start_group "$ROOT/.venv/bin/gcp-storage-emulator" start --host 127.0.0.1 --port "$port" \
    --default-bucket "$bucket" --in-memory >"$log" 2>&1
  wait_http "http://127.0.0.1:$port/storage/v1/b/$bucket" 30
}
