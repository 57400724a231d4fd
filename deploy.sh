#!/usr/bin/env bash
# Deploy the `chat` function (Cloud Run functions, 2nd gen, HTTP) with everything it needs:
# APIs, service accounts, Firestore, the Cloud Storage bucket for files, the Gemini key in Secret
# Manager (or Vertex AI), IAM, Firestore and Storage rules, Firestore indexes, CPU kept allocated
# after a response. Safe by default: the rules go out before the function (or nothing does), the
# build account may only read the uploaded source, instances and daily tokens are capped, and App
# Check is enforced. Safe to re-run.
# Run `./deploy.sh --help` for the options.
set -euo pipefail

readonly FUNCTION=chat
readonly SECRET=gemini-api-key
readonly RUNTIME_SA_ID=chat-runtime
readonly BUILD_SA_ID=chat-build
# The build reads the uploaded source from Cloud Functions' own buckets
# (gcf-v2-sources-<project number>-<region>), and no other bucket: users' files stay out of reach.
readonly SOURCES_CONDITION='expression=resource.name.startsWith("projects/_/buckets/gcf-v2-sources-"),title=gcf-sources-read-only'

usage() {
  cat <<'EOF'
Usage: ./deploy.sh [options]

Deploys the `chat` HTTP function (Cloud Run functions, 2nd gen) from functions/.

Project and region:
  --project ID            Google Cloud project (else $GOOGLE_CLOUD_PROJECT, $CLOUDSDK_CORE_PROJECT,
                          then `gcloud config get-value project`)
  --region REGION         region of the function (else $REGION, default us-central1)
Gemini access (pick one):
  (default)               API key from Secret Manager secret `gemini-api-key`, mounted as the env
                          var GEMINI_API_KEY
  --set-gemini-key        create the secret or add a new version to it first; the key is read
                          from $GEMINI_API_KEY, else from stdin (hidden prompt on a terminal)
  --vertex                Vertex AI through the runtime service account, no key
  --vertex-location LOC   Vertex AI location for --vertex (default global)
Function settings:
  --allowed-origins LIST  comma-separated browser origins allowed by CORS, e.g.
                          https://app.example.com (else $ALLOWED_ORIGINS; warns when empty)
  --model NAME            Gemini model (else $GEMINI_MODEL, default gemini-2.5-flash)
  --concurrency N         requests per instance, 1-1000 (default 250; what one instance streamed
                          without error is in docs/benchmark.md); THREADS matches
  --cpu N                 vCPUs per instance: 1, 2, 4, 6 or 8 (default 2)
  --memory SIZE           memory per instance (default 1Gi)
  --min-instances N       instances kept running even when idle (default 0)
  --max-instances N       instances at most, 1 or more (default 10): with the daily token
                          budget it bounds the bill
  --runtime ID            Python runtime (default python313)
  --firestore-location L  location of a new Firestore database (default: the region);
                          ignored when the database exists. It can never be changed.
  --files-bucket NAME     Cloud Storage bucket for the files users attach (else $FILES_BUCKET;
                          default: the project's Firebase default bucket,
                          PROJECT.firebasestorage.app, or PROJECT.appspot.com where only that
                          older one exists). Created in the region when absent; the function
                          gets object access to that bucket alone.
Cost and abuse limits:
  --user-daily-tokens N   Gemini tokens one user may spend in a UTC day (default 2000000;
                          0 is no limit) -> USER_DAILY_TOKENS
  --daily-tokens N        Gemini tokens the whole project may spend in a UTC day (default
                          20000000; 0 is no limit) -> DAILY_TOKENS
  --app-check MODE        enforce (default), monitor or off -> APP_CHECK. enforce refuses every
                          request without a valid Firebase App Check token; monitor only logs
                          what enforce would refuse (to roll App Check out)
  --no-app-check          the same as --app-check off. Warns: then any script with a free
                          Firebase account can spend the daily token budget
  --anonymous-users A     allow or deny Firebase anonymous accounts -> ANONYMOUS_USERS
                          (default: allow when App Check is enforced, else deny)
Telemetry:
  --trace-ratio R         share of requests traced, 0 to 1 (default 0.1), unless the caller's
                          trace is sampled already -> OTEL_TRACES_SAMPLER(_ARG). Spans go to
                          Cloud Trace (through the Telemetry API) and metrics to Cloud
                          Monitoring; the runtime account gets roles/telemetry.tracesWriter and
                          roles/monitoring.metricWriter, nothing more
  --no-telemetry          no spans, no metrics, and neither role
Other:
  --dry-run               print every command, run none (needs no gcloud, no login)
  -h, --help              this help

The Firestore and Storage rules are deployed first, with the Firebase CLI
(npm install -g firebase-tools, then firebase login). Without the CLI, or if that deploy fails,
the function is not deployed. The function is deployed with --allow-unauthenticated: anyone may
reach it at the IAM level, and the function itself verifies Firebase ID tokens
(AUTH_MODE=firebase) and, by default, App Check tokens. See docs/operations.md#deploy.
EOF
}

die() {
  printf 'deploy.sh: error: %s\n' "$1" >&2
  exit "${2:-1}"
}
# fail MESSAGE LINE...: an error, then what to do about it, one indented line each.
fail() {
  printf 'deploy.sh: error: %s\n' "$1" >&2
  shift
  printf '  %s\n' "$@" >&2
  exit 1
}
warn() { printf 'deploy.sh: warning: %s\n' "$1" >&2; }
note() { printf '%s\n' "$*"; }

# ---------------------------------------------------------------------------------------------
# Options
PROJECT=""
REGION_OPT=""
ALLOWED_ORIGINS_OPT="${ALLOWED_ORIGINS-}"
MODEL="${GEMINI_MODEL:-gemini-2.5-flash}"
CONCURRENCY=250
CPU=2
MEMORY=1Gi
MIN_INSTANCES=0
MAX_INSTANCES=10
USER_DAILY_TOKENS=2000000
DAILY_TOKENS=20000000
APP_CHECK=enforce
ANONYMOUS_USERS="" # empty: follows App Check
RUNTIME=python313
FIRESTORE_LOCATION=""
FILES_BUCKET_OPT="${FILES_BUCKET-}"
VERTEX=0
VERTEX_LOCATION=global
TELEMETRY=1
TRACE_RATIO=0.1
SET_KEY=0
DRY_RUN=0
readonly TIMEOUT=3600s

need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)" 2; }

while [[ $# -gt 0 ]]; do
  opt=$1
  value=""
  if [[ $opt == --*=* ]]; then
    value=${opt#*=}
    opt=${opt%%=*}
    set -- "$opt" "$value" "${@:2}"
  fi
  case $opt in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --vertex) VERTEX=1; shift ;;
    --set-gemini-key) SET_KEY=1; shift ;;
    --project) need_value "$@"; PROJECT=$2; shift 2 ;;
    --region) need_value "$@"; REGION_OPT=$2; shift 2 ;;
    --allowed-origins) [[ $# -ge 2 ]] || die "--allowed-origins needs a value" 2
      ALLOWED_ORIGINS_OPT=$2; shift 2 ;;
    --model) need_value "$@"; MODEL=$2; shift 2 ;;
    --concurrency) need_value "$@"; CONCURRENCY=$2; shift 2 ;;
    --cpu) need_value "$@"; CPU=$2; shift 2 ;;
    --memory) need_value "$@"; MEMORY=$2; shift 2 ;;
    --min-instances) need_value "$@"; MIN_INSTANCES=$2; shift 2 ;;
    --max-instances) need_value "$@"; MAX_INSTANCES=$2; shift 2 ;;
    --user-daily-tokens) need_value "$@"; USER_DAILY_TOKENS=$2; shift 2 ;;
    --daily-tokens) need_value "$@"; DAILY_TOKENS=$2; shift 2 ;;
    --app-check) need_value "$@"; APP_CHECK=$2; shift 2 ;;
    --no-app-check) APP_CHECK=off; shift ;;
    --anonymous-users) need_value "$@"; ANONYMOUS_USERS=$2; shift 2 ;;
    --runtime) need_value "$@"; RUNTIME=$2; shift 2 ;;
    --firestore-location) need_value "$@"; FIRESTORE_LOCATION=$2; shift 2 ;;
    --files-bucket) need_value "$@"; FILES_BUCKET_OPT=$2; shift 2 ;;
    --vertex-location) need_value "$@"; VERTEX_LOCATION=$2; shift 2 ;;
    --trace-ratio) need_value "$@"; TRACE_RATIO=$2; shift 2 ;;
    --no-telemetry) TELEMETRY=0; shift ;;
    *) die "unknown option: $opt (see --help)" 2 ;;
  esac
done

# Take the key out of the environment before any command runs: no child process ever sees it.
# (It stays in this shell, unexported, and is only ever piped to `gcloud secrets` on stdin.)
KEY_FROM_ENV=${GEMINI_API_KEY-}
unset GEMINI_API_KEY

REGION=${REGION_OPT:-${REGION:-us-central1}}
FIRESTORE_LOCATION=${FIRESTORE_LOCATION:-$REGION}
ALLOWED_ORIGINS_VALUE=$ALLOWED_ORIGINS_OPT

# Checks that need no gcloud come first, so that mistakes fail before anything runs.
if ! [[ $CONCURRENCY =~ ^[0-9]{1,4}$ ]] || ((10#$CONCURRENCY < 1 || 10#$CONCURRENCY > 1000)); then
  die "--concurrency must be a whole number from 1 to 1000, not '$CONCURRENCY'" 2
fi
CONCURRENCY=$((10#$CONCURRENCY))
# CPU always allocated and a concurrency above 1 both need at least one whole vCPU.
[[ $CPU =~ ^(1|2|4|6|8)$ ]] || die "--cpu must be 1, 2, 4, 6 or 8, not '$CPU'" 2
[[ $MEMORY =~ ^[1-9][0-9]*(Mi|Gi)$ ]] || die "--memory must look like 512Mi or 1Gi, not '$MEMORY'" 2
[[ $MIN_INSTANCES =~ ^[0-9]+$ ]] || die "--min-instances must be a whole number, not '$MIN_INSTANCES'" 2
MIN_INSTANCES=$((10#$MIN_INSTANCES))
if ! [[ $MAX_INSTANCES =~ ^[0-9]{1,6}$ ]] || ((10#$MAX_INSTANCES < 1)); then
  die "--max-instances must be a whole number, 1 or more, not '$MAX_INSTANCES'" 2
fi
MAX_INSTANCES=$((10#$MAX_INSTANCES))
((MIN_INSTANCES <= MAX_INSTANCES)) \
  || die "--min-instances ($MIN_INSTANCES) is more than --max-instances ($MAX_INSTANCES)" 2
# The function's own bounds (config.py): 0 is no limit, at most 10^12 per user, 10^13 in all.
if ! [[ $USER_DAILY_TOKENS =~ ^[0-9]{1,13}$ ]] || ((10#$USER_DAILY_TOKENS > 1000000000000)); then
  die "--user-daily-tokens must be a whole number from 0 (no limit) to 10^12, not '$USER_DAILY_TOKENS'" 2
fi
if ! [[ $DAILY_TOKENS =~ ^[0-9]{1,14}$ ]] || ((10#$DAILY_TOKENS > 10000000000000)); then
  die "--daily-tokens must be a whole number from 0 (no limit) to 10^13, not '$DAILY_TOKENS'" 2
fi
USER_DAILY_TOKENS=$((10#$USER_DAILY_TOKENS))
DAILY_TOKENS=$((10#$DAILY_TOKENS))
[[ $APP_CHECK =~ ^(enforce|monitor|off)$ ]] \
  || die "--app-check must be enforce, monitor or off, not '$APP_CHECK'" 2
# Anonymous accounts cost a script nothing to make: by default they may chat only where App Check
# shows that the caller is the app (the function's own default follows the same rule).
if [[ -z $ANONYMOUS_USERS ]]; then
  if [[ $APP_CHECK == enforce ]]; then ANONYMOUS_USERS=allow; else ANONYMOUS_USERS=deny; fi
fi
[[ $ANONYMOUS_USERS =~ ^(allow|deny)$ ]] \
  || die "--anonymous-users must be allow or deny, not '$ANONYMOUS_USERS'" 2
[[ $RUNTIME =~ ^python3[0-9]+$ ]] || die "--runtime must be a Python runtime such as python313" 2
[[ $REGION =~ ^[a-z]+(-[a-z]+)+[0-9]+$ ]] || die "--region '$REGION' does not look like a region" 2
[[ $FIRESTORE_LOCATION =~ ^[a-z0-9-]+$ ]] || die "--firestore-location '$FIRESTORE_LOCATION' is not a location" 2
[[ $VERTEX_LOCATION =~ ^[a-z0-9-]+$ ]] || die "--vertex-location '$VERTEX_LOCATION' is not a location" 2
[[ $MODEL =~ ^[A-Za-z0-9._/-]+$ ]] || die "--model '$MODEL' is not a model name" 2
[[ $TRACE_RATIO =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] || die "--trace-ratio must be a number from 0 to 1, not '$TRACE_RATIO'" 2
if [[ -n $FILES_BUCKET_OPT && ! $FILES_BUCKET_OPT =~ ^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$ ]]; then
  die "--files-bucket '$FILES_BUCKET_OPT' is not a bucket name (no gs://, lower case)" 2
fi
# gcloud splits --set-env-vars on '|' below (commas separate the origins).
[[ $ALLOWED_ORIGINS_VALUE != *[[:space:]\|]* ]] || die "--allowed-origins: no spaces or '|'; separate origins with commas" 2
if ((VERTEX && SET_KEY)); then die "--vertex uses no key: drop --set-gemini-key" 2; fi

# ---------------------------------------------------------------------------------------------
# Printing and running. Every command is printed as `+ cmd`, shell-quoted, before it runs; with
# --dry-run it is only printed. The Gemini key is never an argument: it goes to gcloud on stdin.
quote() {
  local plain='^[A-Za-z0-9_./:=@,+%-]+$' flag='^(--[a-z0-9-]+=)(.*)$'
  if [[ $1 =~ $plain ]]; then
    printf '%s' "$1"
  elif [[ $1 =~ $flag ]]; then # --flag='value': quote the value only
    printf '%s' "${BASH_REMATCH[1]}"
    quote "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}
show() { # show [--note TEXT] CMD...
  local line="+" extra="" arg
  if [[ $1 == --note ]]; then extra="  # $2"; shift 2; fi
  for arg in "$@"; do line+=" $(quote "$arg")"; done
  printf '%s%s\n' "$line" "$extra"
}
run() { # run [--note TEXT] CMD...
  show "$@"
  if [[ $1 == --note ]]; then shift 2; fi
  ((DRY_RUN)) || "$@"
}
# IAM bindings for a service account created a moment ago can fail until it has propagated.
run_retry() {
  show "$@"
  ((DRY_RUN)) && return 0
  local attempt
  for attempt in 1 2 3 4 5 6; do
    if "$@"; then return 0; fi
    ((attempt < 6)) || break
    warn "retrying in 10 s (a new service account can take a moment to appear)"
    sleep 10
  done
  return 1
}
# Runs a describe command quietly; true when the resource exists. Never true in a dry run.
exists() {
  show "$@"
  ((DRY_RUN)) && return 1
  "$@" >/dev/null 2>&1
}
# Pipes the key to a command's stdin; the key is neither printed nor put on a command line.
run_with_key() {
  show --note "key piped on stdin, not shown" "$@"
  ((DRY_RUN)) && return 0
  printf '%s' "$GEMINI_KEY" | "$@"
}

# ---------------------------------------------------------------------------------------------
# Preflight: gcloud, login, project. Skipped by --dry-run, which needs none of them.
if ((!DRY_RUN)); then
  command -v gcloud >/dev/null 2>&1 \
    || die "gcloud not found on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"
  account=$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null || true)
  [[ -n $account ]] || die "gcloud is not logged in: run 'gcloud auth login'"
fi
PROJECT=${PROJECT:-${GOOGLE_CLOUD_PROJECT:-${CLOUDSDK_CORE_PROJECT:-}}}
if [[ -z $PROJECT ]] && ((!DRY_RUN)); then
  PROJECT=$(gcloud config get-value project 2>/dev/null || true)
fi
[[ -n $PROJECT ]] || die "no project: pass --project ID or set GOOGLE_CLOUD_PROJECT"
[[ $PROJECT =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || die "'$PROJECT' is not a project id" 2

# The Firestore and Storage rules go out before the function, with the Firebase CLI: without it
# nothing is deployed. The targets follow from the options alone: Storage rules apply only to the
# project's Firebase default bucket, which is the files bucket unless --files-bucket names another.
FIREBASE_BUCKET="$PROJECT.firebasestorage.app" # the Firebase default bucket since Oct 2024
LEGACY_BUCKET="$PROJECT.appspot.com"           # ... and before
targets="firestore:rules,firestore:indexes"
if [[ -z $FILES_BUCKET_OPT || $FILES_BUCKET_OPT == "$FIREBASE_BUCKET" \
  || $FILES_BUCKET_OPT == "$LEGACY_BUCKET" ]]; then
  targets+=",storage"
fi
firebase_cmd=(firebase deploy --only "$targets" --project "$PROJECT"
  --config infra/firebase.json --non-interactive)
firebase_line=$(show "${firebase_cmd[@]}")
firebase_fix=(
  "Install the Firebase CLI (npm install -g firebase-tools), sign in (firebase login), add"
  "Firebase to $PROJECT (firebase projects:addfirebase $PROJECT, or the Firebase console),"
  "then re-run ./deploy.sh. The rules are deployed with:"
  "  ${firebase_line#+ }"
)
if ((!DRY_RUN)) && ! command -v firebase >/dev/null 2>&1; then
  fail "firebase CLI not found: the Firestore and Storage rules must be deployed before the function, so nothing was deployed" \
    "${firebase_fix[@]}"
fi

GEMINI_KEY=""
if ((SET_KEY && !DRY_RUN)); then
  if [[ -n $KEY_FROM_ENV ]]; then
    GEMINI_KEY=$KEY_FROM_ENV
  elif [[ -t 0 ]]; then
    read -r -s -p "Gemini API key (input hidden): " GEMINI_KEY
    printf '\n' >&2
  else
    GEMINI_KEY=$(cat)
  fi
  # Trim surrounding whitespace and newlines (a key has none).
  GEMINI_KEY=${GEMINI_KEY#"${GEMINI_KEY%%[![:space:]]*}"}
  GEMINI_KEY=${GEMINI_KEY%"${GEMINI_KEY##*[![:space:]]}"}
  [[ -n $GEMINI_KEY ]] || die "--set-gemini-key: no key in \$GEMINI_API_KEY or on stdin"
fi

script_dir=${BASH_SOURCE[0]%/*}
[[ $script_dir != "${BASH_SOURCE[0]}" ]] || script_dir=.
cd "$script_dir"

RUNTIME_SA="$RUNTIME_SA_ID@$PROJECT.iam.gserviceaccount.com"
BUILD_SA="$BUILD_SA_ID@$PROJECT.iam.gserviceaccount.com"
P=(--project="$PROJECT")

if ((DRY_RUN)); then note "# Dry run: nothing below is executed."; fi
if ((VERTEX)); then mode="Vertex AI ($VERTEX_LOCATION)"; else mode="API key (secret $SECRET)"; fi
note "# Deploying $FUNCTION to project $PROJECT, region $REGION; Gemini via $mode."
note "# Limits: at most $MAX_INSTANCES instances; $USER_DAILY_TOKENS Gemini tokens a day per user, $DAILY_TOKENS for the project;"
note "# App Check $APP_CHECK, anonymous accounts: $ANONYMOUS_USERS."
if [[ -z $ALLOWED_ORIGINS_VALUE ]]; then
  warn "--allowed-origins is empty: no browser origin passes CORS (curl still works)"
fi
if [[ $ANONYMOUS_USERS == allow ]]; then
  anonymous="anonymous accounts are allowed, and a script makes those at no cost"
else
  anonymous="anonymous accounts are refused, but other sign-ups are free too"
fi
case $APP_CHECK in
  off) warn "App Check is off: any script with a free Firebase account can spend the daily token budget ($anonymous); only the budgets bound the bill" ;;
  monitor) warn "App Check only monitors: requests without a valid token are served and logged; any script with a free Firebase account can spend the daily token budget ($anonymous); only the budgets bound the bill" ;;
esac
if ((USER_DAILY_TOKENS == 0)); then
  warn "--user-daily-tokens 0 is no limit: one user can spend the whole daily budget"
fi
if ((DAILY_TOKENS == 0)); then
  warn "--daily-tokens 0 is no limit: nothing bounds what the project spends on Gemini in a day"
fi

# ---------------------------------------------------------------------------------------------
# 1. APIs (enabling is idempotent).
apis=(cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com
  artifactregistry.googleapis.com firestore.googleapis.com iam.googleapis.com
  storage.googleapis.com firebasestorage.googleapis.com)
if ((VERTEX)); then apis+=(aiplatform.googleapis.com); else apis+=(secretmanager.googleapis.com); fi
if ((TELEMETRY)); then
  apis+=(telemetry.googleapis.com cloudtrace.googleapis.com monitoring.googleapis.com)
fi
run gcloud services enable "${apis[@]}" "${P[@]}"

# 2. Service accounts: one the function runs as, one Cloud Build builds it with. Projects made
#    since mid-2024 no longer give the default build account enough rights to build a function.
ensure_sa() { # ensure_sa ID EMAIL DESCRIPTION
  if exists gcloud iam service-accounts describe "$2" "${P[@]}" --format=none; then
    note "# service account $2 exists"
  else
    run --note "only if absent" gcloud iam service-accounts create "$1" "${P[@]}" --display-name="$3"
  fi
}
ensure_sa "$RUNTIME_SA_ID" "$RUNTIME_SA" "workshop-chat function runtime"
ensure_sa "$BUILD_SA_ID" "$BUILD_SA" "workshop-chat function build"

grant() { # grant MEMBER_EMAIL ROLE [CONDITION]
  run_retry gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$1" \
    --role="$2" --condition="${3:-None}" --format=none
}
# Least privilege. The runtime account: Firestore (and Vertex AI), plus objects in the files
# bucket alone (step 5), no project-wide storage role. The build account: build logs, the image
# in Artifact Registry, and read access to the uploaded source in gcf-v2-sources-* only.
grant "$RUNTIME_SA" roles/datastore.user
if ((VERTEX)); then grant "$RUNTIME_SA" roles/aiplatform.user; fi
# Telemetry: write spans and metric points, read none of them.
if ((TELEMETRY)); then
  grant "$RUNTIME_SA" roles/telemetry.tracesWriter
  grant "$RUNTIME_SA" roles/monitoring.metricWriter
fi
for role in roles/logging.logWriter roles/artifactregistry.writer; do
  grant "$BUILD_SA" "$role"
done
grant "$BUILD_SA" roles/storage.objectViewer "$SOURCES_CONDITION"
# Earlier versions of this script granted the build account roles/storage.objectAdmin on the
# whole project, users' files included: take it back where it is still there.
old_role=roles/storage.objectAdmin
policy_cmd=(gcloud projects get-iam-policy "$PROJECT" --flatten='bindings[].members'
  --filter="bindings.members:$BUILD_SA" --format='value(bindings.role)')
revoke_cmd=(gcloud projects remove-iam-policy-binding "$PROJECT"
  --member="serviceAccount:$BUILD_SA" --role="$old_role" --condition=None --format=none)
show "${policy_cmd[@]}"
if ((DRY_RUN)); then
  show --note "only if an earlier deploy.sh granted it" "${revoke_cmd[@]}"
elif ! build_roles=$("${policy_cmd[@]}"); then
  revoke_line=$(show "${revoke_cmd[@]}")
  warn "could not read the IAM policy of $PROJECT; if $BUILD_SA still has $old_role, run: ${revoke_line#+ }"
elif [[ $'\n'$build_roles$'\n' == *$'\n'"$old_role"$'\n'* ]]; then
  run --note "granted by an earlier deploy.sh" "${revoke_cmd[@]}"
fi

# 3. The Gemini key, in Secret Manager (key mode only).
if ((!VERTEX)); then
  if ((DRY_RUN)); then
    show gcloud secrets describe "$SECRET" "${P[@]}" --format=none
    if ((SET_KEY)); then
      show --note "if the secret is absent; key piped on stdin, not shown" gcloud secrets create \
        "$SECRET" "${P[@]}" --replication-policy=automatic --data-file=-
      show --note "if it exists; key piped on stdin, not shown" gcloud secrets versions add \
        "$SECRET" "${P[@]}" --data-file=-
    else
      note "# (stops here if the secret is absent: re-run with --set-gemini-key)"
    fi
  elif exists gcloud secrets describe "$SECRET" "${P[@]}" --format=none; then
    if ((SET_KEY)); then
      run_with_key gcloud secrets versions add "$SECRET" "${P[@]}" --data-file=-
    else
      note "# secret $SECRET exists; its latest version is used"
    fi
  elif ((SET_KEY)); then
    run_with_key gcloud secrets create "$SECRET" "${P[@]}" --replication-policy=automatic \
      --data-file=-
  else
    die "secret $SECRET not found in $PROJECT: re-run with --set-gemini-key (key from \$GEMINI_API_KEY or stdin)"
  fi
  run_retry gcloud secrets add-iam-policy-binding "$SECRET" "${P[@]}" \
    --member="serviceAccount:$RUNTIME_SA" --role=roles/secretmanager.secretAccessor \
    --condition=None --format=none
fi

# 4. Firestore (default) database in native mode, created only when absent.
db_type=""
show gcloud firestore databases describe --database='(default)' "${P[@]}" --format='value(type)'
if ((!DRY_RUN)); then
  db_type=$(gcloud firestore databases describe --database='(default)' "${P[@]}" \
    --format='value(type)' 2>/dev/null) || db_type=""
fi
if [[ -z $db_type ]]; then
  run --note "only if absent; the location is permanent" gcloud firestore databases create \
    --database='(default)' --location="$FIRESTORE_LOCATION" --type=firestore-native "${P[@]}"
elif [[ $db_type == *DATASTORE* ]]; then
  die "the (default) database of $PROJECT is in Datastore mode; this function needs Firestore native mode"
else
  note "# Firestore (default) database exists ($db_type)"
fi

# Rate-limit counters (rateLimits/<uid>) and the daily token ledger (budgets/<day>/budgetUsers/
# <uid>, budgets/<day>/budgetShards/<n>) carry expireAt: a TTL policy deletes them, so they never
# pile up. Setting the same policy again is harmless (re-runs), and a failure here is not fatal.
for group in rateLimits budgetUsers budgetShards; do
  run gcloud firestore fields ttls update expireAt --collection-group="$group" --enable-ttl \
    --async "${P[@]}" --quiet || warn "could not set the TTL on $group.expireAt; set it later"
done

# 5. The bucket for the files users attach. The function only reads, writes and deletes objects
#    in it (roles/storage.objectUser on this bucket alone, no project-wide storage role); it
#    never creates or inspects a bucket, so the bucket is made here when it is missing.
bucket_exists() { exists gcloud storage buckets describe "gs://$1" "${P[@]}" --format=none; }
# A *.firebasestorage.app bucket cannot be made with `gcloud storage`: Cloud Storage for Firebase
# makes it and links it to the project (that needs Firebase added and the Blaze plan). gcloud has
# no command for it, so curl calls the API; the access token goes on curl's stdin, never in argv.
create_firebase_bucket() {
  local api="https://firebasestorage.googleapis.com/v1beta/projects/$PROJECT/defaultBucket"
  local create=(curl -sS --fail-with-body -X POST "$api" -H @- -H "X-Goog-User-Project: $PROJECT"
    -H "Content-Type: application/json" --data "{\"location\":\"$REGION\"}")
  local token_cmd=(gcloud auth print-access-token --quiet)
  show --note "its output goes to curl on stdin, not shown" "${token_cmd[@]}"
  show --note "only if absent; the token is read from stdin" "${create[@]}"
  ((DRY_RUN)) && return 0
  command -v curl >/dev/null 2>&1 || die "curl not found: it creates gs://$FIREBASE_BUCKET"
  local token
  token=$("${token_cmd[@]}") || die "could not get an access token from gcloud"
  printf 'Authorization: Bearer %s\n' "$token" | "${create[@]}" \
    || die "could not create gs://$FIREBASE_BUCKET (is Firebase added to $PROJECT, on the Blaze plan?); or pass --files-bucket NAME"
  printf '\n'
}
if [[ -n $FILES_BUCKET_OPT ]]; then
  FILES_BUCKET=$FILES_BUCKET_OPT
  if bucket_exists "$FILES_BUCKET"; then
    note "# bucket gs://$FILES_BUCKET exists"
  elif [[ $FILES_BUCKET == "$FIREBASE_BUCKET" ]]; then
    create_firebase_bucket
  else
    run --note "only if absent" gcloud storage buckets create "gs://$FILES_BUCKET" "${P[@]}" \
      --location="$REGION" --uniform-bucket-level-access --public-access-prevention
  fi
elif bucket_exists "$FIREBASE_BUCKET"; then
  FILES_BUCKET=$FIREBASE_BUCKET
  note "# bucket gs://$FILES_BUCKET exists"
elif bucket_exists "$LEGACY_BUCKET"; then
  FILES_BUCKET=$LEGACY_BUCKET
  note "# bucket gs://$FILES_BUCKET exists (the project's Firebase default bucket)"
else
  FILES_BUCKET=$FIREBASE_BUCKET
  create_firebase_bucket
fi
run_retry gcloud storage buckets add-iam-policy-binding "gs://$FILES_BUCKET" "${P[@]}" \
  --member="serviceAccount:$RUNTIME_SA" --role=roles/storage.objectUser --format=none

# 6. Firestore security rules and indexes, and the Storage rules (deny all) when the files bucket
#    is the Firebase default one, with the Firebase CLI (the project must have Firebase added,
#    which Firebase Auth needs anyway). They guard direct frontend access only: the function's
#    server SDKs bypass them. A bucket outside Firebase is reached through IAM alone. They go out
#    BEFORE the function, after the database and the bucket they apply to: if they cannot, the
#    function is not deployed, so it never runs ahead of its rules.
if [[ $targets != *storage* ]]; then
  note "# gs://$FILES_BUCKET is not the Firebase default bucket: no Storage rules apply to it"
fi
if ! run "${firebase_cmd[@]}"; then
  fail "deploying the Firestore rules and indexes (and Storage rules) failed, so the function was not deployed: its rules must be in place first" \
    "See the firebase output above; usually the CLI is not signed in or Firebase is not added." \
    "${firebase_fix[@]}"
fi

# 7. The function. --allow-unauthenticated is deliberate: the function verifies Firebase ID
#    tokens itself (AUTH_MODE=firebase), and App Check tokens unless told otherwise, so IAM must
#    let the browser's requests through. --max-instances with the daily token budgets bounds the
#    bill.
env_vars="GOOGLE_CLOUD_PROJECT=$PROJECT|GEMINI_MODEL=$MODEL|ALLOWED_ORIGINS=$ALLOWED_ORIGINS_VALUE"
env_vars+="|AUTH_MODE=firebase|THREADS=$CONCURRENCY|WORKERS=$CPU|FILES_BUCKET=$FILES_BUCKET"
env_vars+="|USER_DAILY_TOKENS=$USER_DAILY_TOKENS|DAILY_TOKENS=$DAILY_TOKENS"
env_vars+="|APP_CHECK=$APP_CHECK|ANONYMOUS_USERS=$ANONYMOUS_USERS"
if ((TELEMETRY)); then
  env_vars+="|OTEL_TRACES_EXPORTER=gcp_trace|OTEL_METRICS_EXPORTER=gcp_monitoring"
  env_vars+="|OTEL_TRACES_SAMPLER=parentbased_traceidratio|OTEL_TRACES_SAMPLER_ARG=$TRACE_RATIO"
else
  env_vars+="|OTEL_TRACES_EXPORTER=none|OTEL_METRICS_EXPORTER=none"
fi
if ((VERTEX)); then
  env_vars+="|GOOGLE_GENAI_USE_VERTEXAI=true|GOOGLE_CLOUD_LOCATION=$VERTEX_LOCATION"
  credentials=(--clear-secrets)
else
  credentials=(--set-secrets="GEMINI_API_KEY=$SECRET:latest")
fi
note "# --allow-unauthenticated: the function is public at the IAM level on purpose;"
note "# it verifies Firebase ID tokens itself (AUTH_MODE=firebase), and App Check tokens"
note "# unless APP_CHECK is off (APP_CHECK=$APP_CHECK)."
run gcloud functions deploy "$FUNCTION" --gen2 --region="$REGION" "${P[@]}" \
  --runtime="$RUNTIME" --source=functions --entry-point="$FUNCTION" --trigger-http \
  --allow-unauthenticated --service-account="$RUNTIME_SA" \
  --build-service-account="projects/$PROJECT/serviceAccounts/$BUILD_SA" \
  --concurrency="$CONCURRENCY" --cpu="$CPU" --memory="$MEMORY" --timeout="$TIMEOUT" \
  --min-instances="$MIN_INSTANCES" --max-instances="$MAX_INSTANCES" \
  --set-env-vars="^|^$env_vars" "${credentials[@]}" --quiet

# 8. CPU stays allocated after a response (instance-based billing), so that a reply whose client
#    left still finishes and is stored. `gcloud functions deploy` has no flag for it: set it on
#    the function's Cloud Run service, on every run.
run gcloud run services update "$FUNCTION" --region="$REGION" "${P[@]}" --no-cpu-throttling \
  --quiet

# 9. Where it is, and how to call it.
url_cmd=(gcloud functions describe "$FUNCTION" --region="$REGION" "${P[@]}"
  --format='value(serviceConfig.uri)')
show "${url_cmd[@]}"
if ((DRY_RUN)); then
  url="<function URL>"
else
  url=$("${url_cmd[@]}")
fi
if [[ $APP_CHECK == enforce ]]; then
  how="Firebase ID tokens itself (AUTH_MODE=firebase), and App Check tokens (APP_CHECK=enforce).
Call it with both (from a shell, an App Check token comes from a debug token: see
docs/operations.md#deploy), for example:"
  app_check_header=$'\n    -H "X-Firebase-AppCheck: $APP_CHECK_TOKEN" \\'
else
  how="Firebase ID tokens itself (AUTH_MODE=firebase); APP_CHECK=$APP_CHECK. Call it with a Firebase
ID token, for example:"
  app_check_header=""
fi
cat <<EOF

Function URL: $url
It is public at the IAM level (--allow-unauthenticated) on purpose: the function verifies
$how

  curl -N "$url" \\
    -H "Authorization: Bearer \$ID_TOKEN" -H 'Content-Type: application/json' \\$app_check_header
    -d '{"sessionId":"s1","stepId":"empathize","id":"s1","trigger":"submit-message",
         "messages":[{"id":"m1","role":"user","parts":[{"type":"text","text":"Hello"}]}]}'
EOF
