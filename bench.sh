#!/usr/bin/env bash
# Benchmarks the chat function as production runs it (functions-framework -> gunicorn, deploy.sh's
# WORKERS, two instances) against the Firestore emulator and the Gemini stand-in, side by side
# with the predecessor's route (bench/predecessor: AI SDK streamText on Node, no storage), and
# prints the report. A full run takes about 15 minutes and writes it to docs/benchmark.md.
#
#   ./bench.sh               full run; the report goes to docs/benchmark.md too
#   ./bench.sh --quick       small counts, a few minutes, for development (run dir only)
#   ./bench.sh --write-docs  write docs/benchmark.md even with --quick or the options below
#   ./bench.sh --out DIR     keep logs, results.json and report.md in DIR (default: a new /tmp dir)
#   other options go to `python -m bench` (--only PHASES, --levels N,N, --workers N,
#   --env NAME=VALUE; --help); with any of them docs/benchmark.md is left alone
#
# Everything it starts runs in process groups that are stopped on exit, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/lib.sh disable=SC1091
. scripts/lib.sh

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

DOCS=docs/benchmark.md
args=()
out=""
write_docs=1  # a full run with the default options writes the report to $DOCS
force_docs=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) args+=(--quick); write_docs=0; shift ;;
    --write-docs) force_docs=1; shift ;;
    --out)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      out=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    --only | --levels | --workers | --env | --only=* | --levels=* | --workers=* | --env=*)
      write_docs=0; args+=("$1"); shift ;;  # an experiment: not the figures the docs quote
    *) args+=("$1"); shift ;;
  esac
done
[ "$force_docs" = 1 ] && write_docs=1

ensure_venv
command -v node >/dev/null || { echo "bench.sh: node (20+) is needed for the predecessor" >&2; exit 1; }
ensure_npm bench/predecessor

# A thousand streams hold ~4000 sockets across the function, stand-in and client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ]; then
  echo "warning: ulimit -n is $(ulimit -n); 1000 streams need about 4500 descriptors" >&2
fi

run_dir=${out:-$(mktemp -d "${TMPDIR:-/tmp}/workshop-chat-bench.XXXXXX")}
mkdir -p "$run_dir"
run_dir=$(cd "$run_dir" && pwd)
# stack/ appends the process group of every service it starts here.
export BENCH_PGID_FILE="$run_dir/pgids"
: >"$BENCH_PGID_FILE"

# shellcheck disable=SC2317 # runs from the EXIT trap
cleanup() {
  local status=$?
  # The groups of the services stack/ started join the driver's; stop_all ends all.
  [ -f "$BENCH_PGID_FILE" ] && mapfile -t -O "${#CHILD_GROUPS[@]}" CHILD_GROUPS <"$BENCH_PGID_FILE"
  stop_all
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_group .venv/bin/python -m bench "${args[@]}" --out "$run_dir"
status=0
wait "${CHILD_GROUPS[0]}" || status=$?
echo "logs, results.json and report.md: $run_dir" >&2
if [ "$status" = 0 ] && [ "$write_docs" = 1 ] && [ -s "$run_dir/report.md" ]; then
  mkdir -p "$(dirname "$DOCS")"
  cp "$run_dir/report.md" "$DOCS"
  echo "report written to $DOCS" >&2
fi
exit "$status"
