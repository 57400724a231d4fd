#!/usr/bin/env bash
# Runs the whole stack locally: the Firestore emulator (unless FIRESTORE_EMULATOR_HOST is set),
# a Cloud Storage emulator for attached files (unless STORAGE_EMULATOR_HOST is set), the Gemini
# stand-in (unless GEMINI_API_KEY or Vertex AI is configured), the Firebase Auth emulator (unless
# AUTH_MODE=none or FIREBASE_AUTH_EMULATOR_HOST is set), the function on $PORT (8080) and the
# demo page on $DEMO_PORT (5173). Ctrl-C stops it all, also with the output piped (| tee dev.log).
#
# A taken PORT or DEMO_PORT is refused before anything starts. Logs go to $RUN_DIR (.run/).
# --traces draws each request's trace (OpenTelemetry spans) in the terminal as it ends; any
# OTEL_* variable set here reaches the function as it is (an OTLP collector's, say).
# Also read: GOOGLE_CLOUD_PROJECT, FILES_BUCKET, THREADS, ALLOWED_ORIGINS, and for App Check
# VITE_APP_CHECK_SITE_KEY, VITE_APP_CHECK_DEBUG_TOKEN, VITE_FIREBASE_APP_ID, VITE_FIREBASE_API_KEY.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_venv
ensure_npm demo

# The services start from stack/, as for the tests and the benchmark. exec: Ctrl-C then reaches
# the process that stops them, and no shell is left between it and the terminal.
exec .venv/bin/python -m stack dev "$@"
