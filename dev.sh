#!/usr/bin/env bash
# Runs the whole stack locally: the Firestore emulator (unless FIRESTORE_EMULATOR_HOST is set),
# a Cloud Storage emulator for attached files (unless STORAGE_EMULATOR_HOST is set), the Gemini
# stand-in (unless GEMINI_API_KEY or Vertex AI is configured), the Firebase Auth emulator (unless
# AUTH_MODE=none), the function on $PORT and the demo page. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

PORT=${PORT:-8080}
DEMO_PORT=${DEMO_PORT:-5173}
export GOOGLE_CLOUD_PROJECT=${GOOGLE_CLOUD_PROJECT:-demo-workshop-chat}
export FILES_BUCKET=${FILES_BUCKET:-$GOOGLE_CLOUD_PROJECT.firebasestorage.app} # as deploy.sh does
export AUTH_MODE=${AUTH_MODE:-firebase}
export THREADS=${THREADS:-1000}            # one gunicorn thread per open stream
export ALLOWED_ORIGINS=${ALLOWED_ORIGINS:-http://localhost:$DEMO_PORT,http://127.0.0.1:$DEMO_PORT}
export XDG_RUNTIME_DIR="$ROOT/.run/gunicorn"   # a control socket of its own (see platform notes)
mkdir -p .run "$XDG_RUNTIME_DIR"

ensure_venv
ensure_npm demo

trap 'echo; echo "stopping..."; stop_all' EXIT
trap 'exit 130' INT TERM

if [ -z "${FIRESTORE_EMULATOR_HOST:-}" ]; then
  port=$(free_port)
  echo "== Firestore emulator on 127.0.0.1:$port (log: .run/firestore.log)"
  start_firestore_emulator "$port" .run/firestore.log
  export FIRESTORE_EMULATOR_HOST="127.0.0.1:$port"
fi

if [ -z "${STORAGE_EMULATOR_HOST:-}" ]; then
  port=$(free_port)
  echo "== Cloud Storage emulator on 127.0.0.1:$port (log: .run/storage.log)"
  start_storage_emulator "$port" "$FILES_BUCKET" .run/storage.log
  export STORAGE_EMULATOR_HOST="http://127.0.0.1:$port"   # google-cloud-storage's own variable
fi

if [ -z "${GEMINI_API_KEY:-}${GOOGLE_API_KEY:-}" ] && [ "${GOOGLE_GENAI_USE_VERTEXAI:-}" != "true" ]; then
  port=$(free_port)
  echo "== Gemini stand-in on 127.0.0.1:$port (offline; set GEMINI_API_KEY for the real model)"
  start_group .venv/bin/python standin/gemini_standin.py --port "$port" >.run/standin.log 2>&1
  wait_http "http://127.0.0.1:$port/_standin/health"
  export GOOGLE_GEMINI_BASE_URL="http://127.0.0.1:$port" GEMINI_API_KEY=standin
fi

if [ "$AUTH_MODE" = firebase ] && [ -z "${FIREBASE_AUTH_EMULATOR_HOST:-}" ]; then
  port=$(free_port)
  echo "== Firebase Auth emulator on 127.0.0.1:$port (log: .run/auth.log)"
  sed "s/\"port\": 9099/\"port\": $port/" infra/firebase.json > .run/firebase.json
  start_group demo/node_modules/.bin/firebase emulators:start --only auth \
    --project "$GOOGLE_CLOUD_PROJECT" --config .run/firebase.json >.run/auth.log 2>&1
  wait_http "http://127.0.0.1:$port/" 60
  export FIREBASE_AUTH_EMULATOR_HOST="127.0.0.1:$port"
fi

echo "== function on http://127.0.0.1:$PORT (log: .run/function.log)"
start_group .venv/bin/functions-framework --target chat --source functions/main.py \
  --host 127.0.0.1 --port "$PORT" >.run/function.log 2>&1
wait_http "http://127.0.0.1:$PORT/healthz" 30 || { tail -20 .run/function.log; exit 1; }

echo "== demo page on http://localhost:$DEMO_PORT (log: .run/demo.log)"
# App Check (optional, off unless a site key is set): VITE_APP_CHECK_SITE_KEY (reCAPTCHA
# Enterprise), VITE_APP_CHECK_DEBUG_TOKEN, and the web app's VITE_FIREBASE_APP_ID and
# VITE_FIREBASE_API_KEY.
VITE_CHAT_URL="http://127.0.0.1:$PORT" VITE_FIREBASE_PROJECT="$GOOGLE_CLOUD_PROJECT" \
VITE_AUTH_EMULATOR_URL="${FIREBASE_AUTH_EMULATOR_HOST:+http://$FIREBASE_AUTH_EMULATOR_HOST}" \
VITE_FIREBASE_APP_ID="${VITE_FIREBASE_APP_ID:-}" VITE_FIREBASE_API_KEY="${VITE_FIREBASE_API_KEY:-}" \
VITE_APP_CHECK_SITE_KEY="${VITE_APP_CHECK_SITE_KEY:-}" \
VITE_APP_CHECK_DEBUG_TOKEN="${VITE_APP_CHECK_DEBUG_TOKEN:-}" \
  start_group npm --prefix demo run dev -- --host 127.0.0.1 --port "$DEMO_PORT" --strictPort \
  >.run/demo.log 2>&1
wait_http "http://127.0.0.1:$DEMO_PORT/" 30 || tail -20 .run/demo.log

auth_note=""
# shellcheck disable=SC2016 # $TOKEN is for the reader to fill in
[ "$AUTH_MODE" = firebase ] && auth_note=' -H "Authorization: Bearer $TOKEN"'
cat <<MSG

Ready.
  Function:  http://127.0.0.1:$PORT
  Demo page: http://localhost:$DEMO_PORT
  Firestore: $FIRESTORE_EMULATOR_HOST (project $GOOGLE_CLOUD_PROJECT)
  Storage:   $STORAGE_EMULATOR_HOST (bucket $FILES_BUCKET)

Try it:
  curl -N http://127.0.0.1:$PORT/$auth_note -H 'Content-Type: application/json' \\
    -d '{"sessionId":"s1","stepId":"empathize","message":{"id":"m1","role":"user","parts":[{"type":"text","text":"Hello"}]}}'
MSG
if [ "$AUTH_MODE" = firebase ]; then
  cat <<MSG
  (get a TOKEN from the Auth emulator:
   TOKEN=\$(curl -s -X POST 'http://$FIREBASE_AUTH_EMULATOR_HOST/identitytoolkit.googleapis.com/v1/accounts:signUp?key=any' \\
     -H 'Content-Type: application/json' -d '{"returnSecureToken":true}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["idToken"])')
   or run AUTH_MODE=none ./dev.sh for no sign-in at all.)
MSG
fi
echo "Ctrl-C stops everything."
wait
