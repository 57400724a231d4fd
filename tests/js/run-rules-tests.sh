#!/usr/bin/env bash
# Start a throwaway Firestore emulator on a free port, run the security rules
# tests against it, and stop the emulator's whole process group on exit.
#   tests/js/run-rules-tests.sh            (from anywhere; needs `npm ci` in tests/js)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
jar=/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar

[ -d "$here/node_modules" ] || (cd "$here" && npm ci --no-audit --no-fund)

port="${RULES_EMULATOR_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
log="$(mktemp)"

# setsid: the emulator gets its own process group so that we can stop all of it.
if [ -f "$jar" ]; then
  setsid java -cp "$jar" com.google.cloud.datastore.emulator.firestore.CloudFirestore \
    start --host=127.0.0.1 --port="$port" >"$log" 2>&1 &
else
  setsid gcloud emulators firestore start --host-port="127.0.0.1:$port" >"$log" 2>&1 &
fi
pgid=$!
cleanup() { kill -- "-$pgid" 2>/dev/null || true; wait "$pgid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT

for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/" 2>/dev/null | grep -q Ok && break
  kill -0 "$pgid" 2>/dev/null || { cat "$log" >&2; echo "emulator exited" >&2; exit 1; }
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/" | grep -q Ok || { cat "$log" >&2; echo "emulator not ready" >&2; exit 1; }

cd "$root"
FIRESTORE_EMULATOR_HOST="127.0.0.1:$port" GCLOUD_PROJECT=demo-workshop-chat \
  node --test tests/js/rules.test.mjs
