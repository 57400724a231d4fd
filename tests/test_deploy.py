"""deploy.sh, run against fake `gcloud`, `firebase` and `curl` commands that record every call.

The fakes are small Python scripts placed first on PATH. Each call appends one JSON line to a log:
the program, its argv, whether the Gemini key was in its environment, and for `secrets` and `curl`
calls what arrived on stdin. Describe/auth/list calls answer from FAKE_* environment variables, so
one test can play a fresh project and the next one a project where everything already exists.
FAKE_FAIL makes every call whose command line contains it fail.

Each test of the safe defaults is written as the attack or the mistake it stops: the function
never goes out ahead of its rules, the build account never reaches users' files, and instances,
daily tokens and App Check bound what a stranger with a script can spend.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy.sh"
KEY = "AIzaFAKE-test-key-0123456789-never-leak"
PROJECT = "demo-x"
REGION = "europe-west1"
RUNTIME_SA = f"chat-runtime@{PROJECT}.iam.gserviceaccount.com"
BUILD_SA = f"chat-build@{PROJECT}.iam.gserviceaccount.com"
URL = "https://chat-abc123-ew.a.run.app"
TOKEN = "ya29.FAKE-access-token-never-in-argv"
FIREBASE_BUCKET = f"{PROJECT}.firebasestorage.app"
LEGACY_BUCKET = f"{PROJECT}.appspot.com"
SOURCES_CONDITION = (
    'expression=resource.name.startsWith("projects/_/buckets/gcf-v2-sources-"),'
    "title=gcf-sources-read-only"
)
RULES_CMD = (
    f"firebase deploy --only firestore:rules,firestore:indexes,storage --project {PROJECT} "
    "--config infra/firebase.json --non-interactive"
)

FAKE = r"""
import json, os, sys

prog = os.path.basename(sys.argv[0])
args = sys.argv[1:]
key = os.environ["FAKE_KEY"]
record = {
    "prog": prog,
    "argv": args,
    "env_has_key": any(key in v for k, v in os.environ.items() if k != "FAKE_KEY"),
}
if (prog == "gcloud" and args[:1] == ["secrets"]) or prog == "curl":
    record["stdin"] = sys.stdin.read()
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(record) + "\n")

def answer(text="", code=0):
    if text:
        print(text)
    sys.exit(code)

def not_found():
    print("ERROR: NOT_FOUND", file=sys.stderr)
    sys.exit(1)

joined = " ".join(args)
fail = os.environ.get("FAKE_FAIL")
if fail and fail in f"{prog} {joined}":
    print("ERROR: (fake) failure", file=sys.stderr)
    sys.exit(1)
if prog in ("firebase", "curl"):
    answer()
if args[:2] == ["auth", "list"]:
    answer(os.environ.get("FAKE_ACCOUNT", ""))
if args[:3] == ["config", "get-value", "project"]:
    answer(os.environ.get("FAKE_CONFIG_PROJECT", ""))
if args[:3] == ["iam", "service-accounts", "describe"]:
    answer() if os.environ.get("FAKE_SA") == "present" else not_found()
if args[:2] == ["secrets", "describe"]:
    answer() if os.environ.get("FAKE_SECRET") == "present" else not_found()
if args[:3] == ["firestore", "databases", "describe"]:
    db = os.environ.get("FAKE_DB", "absent")
    answer(db) if db != "absent" else not_found()
if args[:3] == ["storage", "buckets", "describe"]:
    answer() if args[3] in os.environ.get("FAKE_BUCKETS", "").split(",") else not_found()
if args[:3] == ["auth", "print-access-token", "--quiet"]:
    answer(os.environ["FAKE_TOKEN"])
if args[:2] == ["functions", "describe"]:
    answer(os.environ.get("FAKE_URL", ""))
if args[:2] == ["projects", "get-iam-policy"]:
    answer(os.environ.get("FAKE_BUILD_ROLES", ""))
answer()
"""


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    calls: list[dict]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def curl(self) -> list[dict]:
        return [c for c in self.calls if c["prog"] == "curl"]

    def gcloud(self, *prefix: str) -> list[list[str]]:
        """argv of every gcloud call that starts with `prefix`."""
        n = len(prefix)
        return [
            c["argv"]
            for c in self.calls
            if c["prog"] == "gcloud" and tuple(c["argv"][:n]) == prefix
        ]

    def one(self, *prefix: str) -> list[str]:
        found = self.gcloud(*prefix)
        assert len(found) == 1, f"expected one `gcloud {' '.join(prefix)}`, got {found}"
        return found[0]


def flags(argv: list[str]) -> dict[str, str | None]:
    """--name=value / --name -> {name: value or None}."""
    out: dict[str, str | None] = {}
    for arg in argv:
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            out[name] = value if sep else None
    return out


def env_vars(deploy_argv: list[str]) -> dict[str, str]:
    value = flags(deploy_argv)["set-env-vars"]
    assert value is not None and value.startswith("^|^"), value
    return dict(item.split("=", 1) for item in value[3:].split("|"))


def _system_bin(dest: Path) -> Path:
    """A bin dir with only the tools deploy.sh may use: no real gcloud or firebase."""
    dest.mkdir()
    for tool in ("bash", "cat", "sleep", "env"):
        found = shutil.which(tool)
        assert found, f"{tool} is required on PATH"
        (dest / tool).symlink_to(found)
    return dest


@pytest.fixture
def deploy(tmp_path: Path) -> Callable[..., Result]:
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    system_bin = _system_bin(tmp_path / "sysbin")
    log = tmp_path / "calls.jsonl"
    for prog in ("gcloud", "firebase", "curl"):
        path = fake_bin / prog
        path.write_text(f"#!{sys.executable}\n{FAKE}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def run(
        *args: str,
        stdin: str = "",
        gcloud: bool = True,
        firebase: bool = True,
        **fake: str,
    ) -> Result:
        for prog, present in (("gcloud", gcloud), ("firebase", firebase)):
            target = fake_bin / prog
            hidden = fake_bin / f".{prog}"
            if present and hidden.exists():
                hidden.rename(target)
            if not present and target.exists():
                target.rename(hidden)
        env = {
            "PATH": f"{fake_bin}:{system_bin}",
            "HOME": str(tmp_path),
            "FAKE_LOG": str(log),
            "FAKE_KEY": KEY,
            "FAKE_ACCOUNT": "dev@example.com",
            "FAKE_URL": URL,
            "FAKE_TOKEN": TOKEN,
        }
        env.update({k: v for k, v in fake.items() if k.isupper()})
        if log.exists():
            log.unlink()
        proc = subprocess.run(
            [str(system_bin / "bash"), str(DEPLOY), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return Result(proc.returncode, proc.stdout, proc.stderr, calls)

    return run


BASE = ("--project", PROJECT, "--region", REGION, "--allowed-origins", "https://app.example.com")
FRESH = {"FAKE_DB": "absent", "FAKE_SECRET": "absent", "FAKE_SA": "absent", "FAKE_BUCKETS": ""}
EXISTING = {
    "FAKE_DB": "FIRESTORE_NATIVE",
    "FAKE_SECRET": "present",
    "FAKE_SA": "present",
    "FAKE_BUCKETS": f"gs://{FIREBASE_BUCKET}",
}


def assert_common_deploy(result: Result) -> list[str]:
    """The flags every variant of the deploy must carry; returns the deploy argv."""
    argv = result.one("functions", "deploy")
    assert argv[2] == "chat"
    f = flags(argv)
    assert "gen2" in f and "trigger-http" in f and "allow-unauthenticated" in f
    assert f["region"] == REGION and f["project"] == PROJECT
    assert f["runtime"] in ("python312", "python313")
    assert f["source"] == "functions" and f["entry-point"] == "chat"
    assert f["timeout"] == "3600s"
    assert f["cpu"] == "2" and f["memory"] == "1Gi"
    assert f["concurrency"] == "250" and env_vars(argv)["THREADS"] == "250"
    # One gunicorn worker per vCPU: claims live in Firestore, so workers need not share.
    assert env_vars(argv)["WORKERS"] == f["cpu"]
    assert f["service-account"] == RUNTIME_SA
    assert f["build-service-account"] == f"projects/{PROJECT}/serviceAccounts/{BUILD_SA}"
    assert f["min-instances"] == "0"
    assert f["max-instances"] == "10"
    env = env_vars(argv)
    assert env["GOOGLE_CLOUD_PROJECT"] == PROJECT
    assert env["USER_DAILY_TOKENS"] == "2000000" and env["DAILY_TOKENS"] == "20000000"
    assert env["APP_CHECK"] == "enforce" and env["ANONYMOUS_USERS"] == "allow"
    assert env["GEMINI_MODEL"] == "gemini-2.5-flash"
    assert env["AUTH_MODE"] == "firebase"
    assert env["ALLOWED_ORIGINS"] == "https://app.example.com"
    assert env["FILES_BUCKET"] == FIREBASE_BUCKET
    assert_bucket_access(result, FIREBASE_BUCKET)
    # CPU stays allocated after the response: set on the function's Cloud Run service, after it.
    update = result.one("run", "services", "update")
    assert update[3] == "chat" and "--no-cpu-throttling" in update
    assert flags(update)["region"] == REGION and flags(update)["project"] == PROJECT
    order = [c["argv"][:2] for c in result.calls if c["prog"] == "gcloud"]
    assert order.index(["functions", "deploy"]) < order.index(["run", "services"])
    # The rules are in place before the function exists.
    progs = [c["prog"] + " " + " ".join(c["argv"][:2]) for c in result.calls]
    assert progs.index("firebase deploy --only") < progs.index("gcloud functions deploy")
    assert_least_privilege(result)
    # The IAM-level openness is stated, with the reason.
    assert "--allow-unauthenticated" in result.stdout
    assert "verifies Firebase ID tokens itself" in result.stdout
    assert URL in result.stdout and "curl -N" in result.stdout
    return argv


def assert_bucket_access(result: Result, bucket: str) -> None:
    """The runtime account may use objects in the files bucket, that bucket only, before the
    function that needs it is deployed; no project-wide storage role."""
    binding = result.one("storage", "buckets", "add-iam-policy-binding")
    assert binding[3] == f"gs://{bucket}"
    assert flags(binding)["member"] == f"serviceAccount:{RUNTIME_SA}"
    assert flags(binding)["role"] == "roles/storage.objectUser"
    order = [c["argv"][:3] for c in result.calls if c["prog"] == "gcloud"]
    assert order.index(["storage", "buckets", "add-iam-policy-binding"]) < order.index(
        ["functions", "deploy", "chat"]
    )
    runtime_roles = [r for m, r in project_roles(result) if m == f"serviceAccount:{RUNTIME_SA}"]
    assert not [r for r in runtime_roles if r.startswith("roles/storage")], runtime_roles
    assert env_vars(result.one("functions", "deploy"))["FILES_BUCKET"] == bucket
    assert not any(TOKEN in a for c in result.calls for a in c["argv"])
    assert TOKEN not in result.output


def assert_least_privilege(result: Result) -> None:
    """The build account gets build logs, images, and read access to the uploaded source only;
    neither account holds an unconditioned storage role on the project."""
    build = {
        flags(a)["role"]: flags(a)["condition"]
        for a in result.gcloud("projects", "add-iam-policy-binding")
        if flags(a)["member"] == f"serviceAccount:{BUILD_SA}"
    }
    assert build == {
        "roles/logging.logWriter": "None",
        "roles/artifactregistry.writer": "None",
        "roles/storage.objectViewer": SOURCES_CONDITION,
    }
    for argv in result.gcloud("projects", "add-iam-policy-binding"):
        f = flags(argv)
        if f["role"].startswith("roles/storage"):
            assert f["member"] == f"serviceAccount:{BUILD_SA}", argv
            assert f["role"] == "roles/storage.objectViewer" and f["condition"] != "None", argv
    for argv in result.gcloud("storage", "buckets", "add-iam-policy-binding"):
        assert flags(argv)["member"] != f"serviceAccount:{BUILD_SA}", argv


def firebase_targets(result: Result) -> str:
    (call,) = [c["argv"] for c in result.calls if c["prog"] == "firebase"]
    return call[call.index("--only") + 1]


def project_roles(result: Result) -> set[tuple[str, str]]:
    return {
        (flags(a)["member"], flags(a)["role"])
        for a in result.gcloud("projects", "add-iam-policy-binding")
    }


def test_key_variant_on_a_fresh_project(deploy: Callable[..., Result]) -> None:
    r = deploy(*BASE, "--set-gemini-key", GEMINI_API_KEY=KEY, **FRESH)
    assert r.code == 0, r.output
    argv = assert_common_deploy(r)
    assert flags(argv)["set-secrets"] == "GEMINI_API_KEY=gemini-api-key:latest"
    env = env_vars(argv)
    assert "GOOGLE_GENAI_USE_VERTEXAI" not in env and "GEMINI_API_KEY" not in env

    enabled = set(r.one("services", "enable")[2:])
    for api in (
        "cloudfunctions",
        "run",
        "cloudbuild",
        "artifactregistry",
        "firestore",
        "secretmanager",
    ):
        assert f"{api}.googleapis.com" in enabled
    assert "aiplatform.googleapis.com" not in enabled

    created = r.one("firestore", "databases", "create")
    assert flags(created)["type"] == "firestore-native"
    assert flags(created)["location"] == REGION
    assert flags(created)["database"] == "(default)"
    assert len(r.gcloud("iam", "service-accounts", "create")) == 2

    secret = r.one("secrets", "create")
    assert secret[2] == "gemini-api-key" and flags(secret)["data-file"] == "-"
    assert not r.gcloud("secrets", "versions", "add")
    access = r.one("secrets", "add-iam-policy-binding")
    assert flags(access)["member"] == f"serviceAccount:{RUNTIME_SA}"
    assert flags(access)["role"] == "roles/secretmanager.secretAccessor"

    roles = project_roles(r)
    assert (f"serviceAccount:{RUNTIME_SA}", "roles/datastore.user") in roles
    assert not any(role == "roles/aiplatform.user" for _, role in roles)

    # The Firebase default bucket is made through Cloud Storage for Firebase, the token on stdin.
    assert not r.gcloud("storage", "buckets", "create")
    (create,) = r.curl()
    assert (
        f"https://firebasestorage.googleapis.com/v1beta/projects/{PROJECT}/defaultBucket"
        in (create["argv"])
    )
    assert create["argv"][create["argv"].index("-X") + 1] == "POST"
    assert create["stdin"] == f"Authorization: Bearer {TOKEN}\n"
    assert json.loads(create["argv"][create["argv"].index("--data") + 1]) == {"location": REGION}
    describes = [a[3] for a in r.gcloud("storage", "buckets", "describe")]
    assert describes == [f"gs://{FIREBASE_BUCKET}", f"gs://{LEGACY_BUCKET}"]

    rules = [c["argv"] for c in r.calls if c["prog"] == "firebase"]
    assert rules == [
        [
            "deploy",
            "--only",
            "firestore:rules,firestore:indexes,storage",
            "--project",
            PROJECT,
            "--config",
            "infra/firebase.json",
            "--non-interactive",
        ]
    ]


@pytest.mark.parametrize("source", ["env", "stdin"])
@pytest.mark.parametrize("secret", ["absent", "present"])
def test_key_goes_only_to_secret_manager_stdin(
    deploy: Callable[..., Result], source: str, secret: str
) -> None:
    fake = {"FAKE_DB": "FIRESTORE_NATIVE", "FAKE_SA": "present", "FAKE_SECRET": secret}
    if source == "env":
        r = deploy(*BASE, "--set-gemini-key", GEMINI_API_KEY=KEY, **fake)
    else:
        r = deploy(*BASE, "--set-gemini-key", stdin=KEY + "\n", **fake)
    assert r.code == 0, r.output
    write_cmds = (["secrets", "create"], ["secrets", "versions"])
    writes = [c for c in r.calls if c["argv"][:2] in write_cmds]
    assert len(writes) == 1
    assert writes[0]["argv"][:2] == write_cmds[0 if secret == "absent" else 1]
    assert writes[0]["stdin"] == KEY  # exactly the key, trailing newline trimmed
    for call in r.calls:
        assert not any(KEY in a for a in call["argv"]), call["argv"]
        assert not call["env_has_key"], f"the key leaked into the environment of {call['argv']}"
    assert KEY not in r.output


def test_vertex_variant(deploy: Callable[..., Result]) -> None:
    r = deploy(*BASE, "--vertex", GEMINI_API_KEY=KEY, **FRESH)
    assert r.code == 0, r.output
    argv = assert_common_deploy(r)
    f = flags(argv)
    assert "set-secrets" not in f and "clear-secrets" in f
    env = env_vars(argv)
    assert env["GOOGLE_GENAI_USE_VERTEXAI"] == "true"
    assert env["GOOGLE_CLOUD_LOCATION"] == "global"
    assert "GEMINI_API_KEY" not in env
    assert "aiplatform.googleapis.com" in r.one("services", "enable")
    assert (f"serviceAccount:{RUNTIME_SA}", "roles/aiplatform.user") in project_roles(r)
    assert not r.gcloud("secrets"), "Vertex AI needs no secret"
    assert KEY not in r.output and not any(KEY in a for c in r.calls for a in c["argv"])


def test_vertex_location_option(deploy: Callable[..., Result]) -> None:
    r = deploy(*BASE, "--vertex", "--vertex-location", "europe-west4", **EXISTING)
    assert r.code == 0, r.output
    assert env_vars(r.one("functions", "deploy"))["GOOGLE_CLOUD_LOCATION"] == "europe-west4"


def test_rerun_creates_nothing_that_exists(deploy: Callable[..., Result]) -> None:
    r = deploy(*BASE, **EXISTING)
    assert r.code == 0, r.output
    assert_common_deploy(r)
    assert not [c for c in r.calls if "create" in c["argv"][:4]], "nothing may be created again"
    assert not r.curl(), "the files bucket exists"
    assert not r.gcloud("secrets", "versions", "add"), "the key is only written on request"
    # Re-running still re-applies the idempotent parts.
    assert r.gcloud("secrets", "add-iam-policy-binding")
    assert r.gcloud("run", "services", "update")


def test_rerun_with_new_key_adds_a_version(deploy: Callable[..., Result]) -> None:
    r = deploy(*BASE, "--set-gemini-key", GEMINI_API_KEY=KEY, **EXISTING)
    assert r.code == 0, r.output
    assert not r.gcloud("secrets", "create")
    added = r.one("secrets", "versions", "add")
    assert added[3] == "gemini-api-key" and flags(added)["data-file"] == "-"


def test_missing_secret_without_key_fails_before_deploying(deploy: Callable[..., Result]) -> None:
    r = deploy(*BASE, FAKE_DB="FIRESTORE_NATIVE", FAKE_SA="present", FAKE_SECRET="absent")
    assert r.code != 0
    assert "--set-gemini-key" in r.stderr and "gemini-api-key" in r.stderr
    assert not r.gcloud("functions", "deploy")


def test_datastore_mode_database_is_refused(deploy: Callable[..., Result]) -> None:
    r = deploy(*BASE, FAKE_DB="DATASTORE_MODE", FAKE_SECRET="present", FAKE_SA="present")
    assert r.code != 0 and "Datastore mode" in r.stderr
    assert not r.gcloud("firestore", "databases", "create")
    assert not r.gcloud("functions", "deploy")


@pytest.mark.parametrize("concurrency", ["1", "80", "1000"])
def test_threads_match_concurrency(deploy: Callable[..., Result], concurrency: str) -> None:
    r = deploy(*BASE, "--concurrency", concurrency, **EXISTING)
    assert r.code == 0, r.output
    argv = r.one("functions", "deploy")
    assert flags(argv)["concurrency"] == concurrency
    assert env_vars(argv)["THREADS"] == concurrency


def test_settings_options(deploy: Callable[..., Result]) -> None:
    r = deploy(
        *BASE,
        "--cpu=4",
        "--memory",
        "2Gi",
        "--min-instances",
        "2",
        "--model",
        "gemini-2.5-pro",
        "--runtime",
        "python312",
        **EXISTING,
    )
    assert r.code == 0, r.output
    argv = r.one("functions", "deploy")
    f = flags(argv)
    assert (f["cpu"], f["memory"], f["min-instances"], f["runtime"]) == (
        "4",
        "2Gi",
        "2",
        "python312",
    )
    assert env_vars(argv)["GEMINI_MODEL"] == "gemini-2.5-pro"


def test_several_origins_survive_gclouds_comma_splitting(deploy: Callable[..., Result]) -> None:
    origins = "https://app.example.com,http://localhost:5173"
    r = deploy("--project", PROJECT, "--region", REGION, "--allowed-origins", origins, **EXISTING)
    assert r.code == 0, r.output
    assert env_vars(r.one("functions", "deploy"))["ALLOWED_ORIGINS"] == origins
    assert "allowed-origins is empty" not in r.stderr


def test_empty_origins_warn(deploy: Callable[..., Result]) -> None:
    r = deploy("--project", PROJECT, "--region", REGION, **EXISTING)
    assert r.code == 0, r.output
    assert "--allowed-origins is empty" in r.stderr


def test_firestore_location_option(deploy: Callable[..., Result]) -> None:
    r = deploy(*BASE, "--firestore-location", "eur3", **{**EXISTING, "FAKE_DB": "absent"})
    assert r.code == 0, r.output
    assert flags(r.one("firestore", "databases", "create"))["location"] == "eur3"


def test_project_and_region_from_environment(deploy: Callable[..., Result]) -> None:
    r = deploy(
        "--allowed-origins",
        "https://a.example",
        GOOGLE_CLOUD_PROJECT="demo-env",
        REGION="asia-northeast1",
        **EXISTING,
    )
    assert r.code == 0, r.output
    f = flags(r.one("functions", "deploy"))
    assert (f["project"], f["region"]) == ("demo-env", "asia-northeast1")


def test_project_from_gcloud_config(deploy: Callable[..., Result]) -> None:
    r = deploy("--region", REGION, FAKE_CONFIG_PROJECT="demo-config", **EXISTING)
    assert r.code == 0, r.output
    assert flags(r.one("functions", "deploy"))["project"] == "demo-config"


@pytest.mark.parametrize("gcloud_installed", [True, False])
@pytest.mark.parametrize("variant", [(), ("--set-gemini-key",), ("--vertex",)])
def test_dry_run_prints_every_command_and_runs_none(
    deploy: Callable[..., Result], gcloud_installed: bool, variant: tuple[str, ...]
) -> None:
    r = deploy(
        "--dry-run",
        "--project",
        "demo-x",
        "--region",
        REGION,
        *variant,
        gcloud=gcloud_installed,
        firebase=gcloud_installed,
        FAKE_ACCOUNT="",
        GEMINI_API_KEY=KEY,
    )
    assert r.code == 0, r.output
    assert r.calls == [], "a dry run must not call anything"
    printed = [line[2:] for line in r.stdout.splitlines() if line.startswith("+ ")]
    expected = [
        "gcloud services enable",
        "gcloud iam service-accounts create chat-runtime",
        "gcloud iam service-accounts create chat-build",
        "gcloud projects add-iam-policy-binding demo-x",
        "gcloud firestore databases describe",
        "gcloud firestore databases create",
        "gcloud firestore fields ttls update expireAt --collection-group=rateLimits --enable-ttl",
        "gcloud firestore fields ttls update expireAt --collection-group=budgetUsers --enable-ttl",
        "gcloud firestore fields ttls update expireAt --collection-group=budgetShards --enable-ttl",
        "gcloud projects add-iam-policy-binding demo-x "
        "--member=serviceAccount:chat-build@demo-x.iam.gserviceaccount.com "
        "--role=roles/storage.objectViewer --condition='expression=",
        "gcloud projects remove-iam-policy-binding demo-x "
        "--member=serviceAccount:chat-build@demo-x.iam.gserviceaccount.com "
        "--role=roles/storage.objectAdmin",
        "gcloud functions deploy chat --gen2 --region=europe-west1 --project=demo-x",
        "gcloud run services update chat --region=europe-west1 --project=demo-x "
        "--no-cpu-throttling",
        "firebase deploy --only firestore:rules,firestore:indexes,storage --project demo-x",
        "gcloud functions describe chat",
        "gcloud storage buckets describe gs://demo-x.firebasestorage.app",
        "gcloud storage buckets describe gs://demo-x.appspot.com",
        "gcloud auth print-access-token",
        "curl -sS --fail-with-body -X POST "
        "https://firebasestorage.googleapis.com/v1beta/projects/demo-x/defaultBucket -H @-",
        "gcloud storage buckets add-iam-policy-binding gs://demo-x.firebasestorage.app "
        "--project=demo-x --member=serviceAccount:chat-runtime@demo-x.iam.gserviceaccount.com "
        "--role=roles/storage.objectUser",
    ]
    if "--vertex" not in variant:
        expected += [
            "gcloud secrets describe gemini-api-key",
            "gcloud secrets add-iam-policy-binding gemini-api-key",
        ]
    if "--set-gemini-key" in variant:
        expected += ["gcloud secrets create gemini-api-key", "gcloud secrets versions add"]
    for start in expected:
        assert any(line.startswith(start) for line in printed), f"not printed: {start}"
    deploy_line = next(line for line in printed if line.startswith("gcloud functions deploy"))
    assert "--allow-unauthenticated" in deploy_line and "--timeout=3600s" in deploy_line
    assert "--max-instances=10" in deploy_line
    # The rules come before the function in the dry run too, shown even without the CLI.
    starts = [line.split(" --")[0] for line in printed]
    assert starts.index("firebase deploy") < starts.index("gcloud functions deploy chat")
    assert KEY not in r.output


def test_dry_run_lines_are_shell_words(deploy: Callable[..., Result]) -> None:
    """Each printed command can be pasted into a shell: it splits back into the same words."""
    import shlex

    origins = "https://app.example.com,http://localhost:5173"
    r = deploy("--dry-run", "--project", "demo-x", "--region", REGION, "--allowed-origins", origins)
    assert r.code == 0, r.output
    deploy_line = next(
        line for line in r.stdout.splitlines() if line.startswith("+ gcloud functions deploy")
    )
    words = shlex.split(deploy_line[2:], comments=True)
    assert env_vars(words)["ALLOWED_ORIGINS"] == origins
    db_line = next(
        line
        for line in r.stdout.splitlines()
        if line.startswith("+ gcloud firestore databases create")
    )
    assert "--database=(default)" in shlex.split(db_line[2:], comments=True)
    grant_line = next(line for line in r.stdout.splitlines() if "storage.objectViewer" in line)
    assert f"--condition={SOURCES_CONDITION}" in shlex.split(grant_line[2:], comments=True)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("gcloud-missing", "gcloud not found"),
        ("not-logged-in", "not logged in"),
        ("project-unset", "no project"),
    ],
)
def test_early_failures(deploy: Callable[..., Result], case: str, message: str) -> None:
    args: tuple[str, ...] = ("--region", REGION)
    kwargs: dict[str, object] = dict(EXISTING)
    if case == "gcloud-missing":
        args += ("--project", PROJECT)
        kwargs["gcloud"] = False
    elif case == "not-logged-in":
        args += ("--project", PROJECT)
        kwargs["FAKE_ACCOUNT"] = ""
    r = deploy(*args, **kwargs)  # type: ignore[arg-type]
    assert r.code != 0
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    mutating = [
        c for c in r.calls if c["argv"][:2] not in (["auth", "list"], ["config", "get-value"])
    ]
    assert mutating == [], "nothing may run before the preflight passes"


def test_project_unset_in_dry_run(deploy: Callable[..., Result]) -> None:
    r = deploy("--dry-run", "--region", REGION, gcloud=False)
    assert r.code != 0 and "no project" in r.stderr


@pytest.mark.parametrize(
    "bad",
    [
        ("--concurrency", "0"),
        ("--concurrency", "1001"),
        ("--concurrency", "many"),
        ("--cpu", "0.5"),
        ("--memory", "lots"),
        ("--min-instances", "-1"),
        ("--max-instances", "0"),
        ("--max-instances", "-1"),
        ("--max-instances", "ten"),
        ("--max-instances",),
        ("--min-instances", "5", "--max-instances", "2"),
        ("--user-daily-tokens", "-1"),
        ("--user-daily-tokens", "2e6"),
        ("--user-daily-tokens", "1000000000001"),
        ("--daily-tokens", "lots"),
        ("--daily-tokens", "10000000000001"),
        ("--daily-tokens", ""),
        ("--app-check", "maybe"),
        ("--anonymous-users", "sometimes"),
        ("--bogus",),
        ("--vertex", "--set-gemini-key"),
        ("--project",),
        ("--files-bucket", "gs://my-files"),
        ("--files-bucket", "My_Files"),
        ("--files-bucket", "a"),
        ("--files-bucket", "files bucket"),
        ("--trace-ratio", "1.5"),
        ("--trace-ratio", "all"),
    ],
)
def test_bad_options_fail_before_any_call(
    deploy: Callable[..., Result], bad: tuple[str, ...]
) -> None:
    args = ("--region", REGION, *bad) if bad == ("--project",) else (*BASE, *bad)
    r = deploy(*args, **EXISTING)
    assert r.code != 0
    assert r.stderr.startswith("deploy.sh: error:"), r.stderr
    assert bad[0] in r.stderr, "the error names the option"
    if bad != ("--bogus",):
        assert "unknown option" not in r.stderr, "every option here is a known one"
    assert r.calls == []


def assert_rules_fix_named(stderr: str, command: str = RULES_CMD) -> None:
    for step in (
        "npm install -g firebase-tools",
        "firebase login",
        f"firebase projects:addfirebase {PROJECT}",
        "re-run ./deploy.sh",
    ):
        assert step in stderr, step
    assert command in stderr, "the exact rules command is printed"


@pytest.mark.parametrize("bucket", ["firebase", "own"])
def test_without_the_firebase_cli_nothing_is_deployed_and_the_fix_is_named(
    deploy: Callable[..., Result], bucket: str
) -> None:
    """Someone without the Firebase CLI must not end up with a function ahead of its rules."""
    args = (*BASE, "--files-bucket", "workshop-files-x") if bucket == "own" else BASE
    r = deploy(*args, firebase=False, **EXISTING)
    assert r.code != 0
    assert not r.gcloud("functions", "deploy")
    assert "firebase CLI not found" in r.stderr and "nothing was deployed" in r.stderr
    command = RULES_CMD if bucket == "firebase" else RULES_CMD.replace(",storage", "")
    assert_rules_fix_named(r.stderr, command)
    # It stops at the preflight, before anything is created or granted.
    changed = [
        c for c in r.calls if c["argv"][:2] not in (["auth", "list"], ["config", "get-value"])
    ]
    assert changed == []


def test_failed_rules_stop_before_the_function(deploy: Callable[..., Result]) -> None:
    """A rules deploy that fails (not signed in, Firebase not added) leaves no function behind."""
    r = deploy(*BASE, FAKE_FAIL="firebase deploy", **EXISTING)
    assert r.code != 0
    assert [c["prog"] for c in r.calls].count("firebase") == 1
    assert not r.gcloud("functions", "deploy")
    assert not r.gcloud("run", "services", "update")
    assert "the function was not deployed" in r.stderr
    assert_rules_fix_named(r.stderr)
    assert URL not in r.stdout


# --- least privilege ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["--set-gemini-key", "--vertex"])
def test_the_build_account_cannot_read_or_change_users_files(
    deploy: Callable[..., Result], variant: str
) -> None:
    """A compromised build (a malicious dependency runs at build time) must not reach the files
    bucket: the build account only reads Cloud Functions' source buckets."""
    r = deploy(*BASE, variant, GEMINI_API_KEY=KEY, **FRESH)
    assert r.code == 0, r.output
    assert_least_privilege(r)
    roles = project_roles(r)
    assert (f"serviceAccount:{BUILD_SA}", "roles/storage.objectAdmin") not in roles
    runtime = [role for member, role in roles if member == f"serviceAccount:{RUNTIME_SA}"]
    assert not [role for role in runtime if role.startswith("roles/storage")], runtime
    # gcloud splits --condition on commas into expression, title and description.
    (viewer,) = [
        flags(a)["condition"]
        for a in r.gcloud("projects", "add-iam-policy-binding")
        if flags(a)["role"] == "roles/storage.objectViewer"
    ]
    assert viewer is not None
    parsed = dict(item.split("=", 1) for item in viewer.split(","))
    assert parsed == {
        "expression": 'resource.name.startsWith("projects/_/buckets/gcf-v2-sources-")',
        "title": "gcf-sources-read-only",
    }


@pytest.mark.parametrize("granted", [True, False])
def test_an_old_project_wide_object_admin_grant_is_taken_back(
    deploy: Callable[..., Result], granted: bool
) -> None:
    """A project deployed by an earlier deploy.sh loses the build account's objectAdmin role."""
    roles = ["roles/logging.logWriter", "roles/artifactregistry.writer"]
    if granted:
        roles.append("roles/storage.objectAdmin")
    r = deploy(*BASE, FAKE_BUILD_ROLES="\n".join(roles), **EXISTING)
    assert r.code == 0, r.output
    query = r.one("projects", "get-iam-policy")
    assert query[2] == PROJECT and flags(query)["filter"] == f"bindings.members:{BUILD_SA}"
    removed = r.gcloud("projects", "remove-iam-policy-binding")
    if not granted:
        assert removed == []
        return
    (argv,) = removed
    f = flags(argv)
    assert argv[2] == PROJECT and f["member"] == f"serviceAccount:{BUILD_SA}"
    assert (f["role"], f["condition"]) == ("roles/storage.objectAdmin", "None")
    order = [c["argv"][:2] for c in r.calls if c["prog"] == "gcloud"]
    assert order.index(["projects", "remove-iam-policy-binding"]) < order.index(
        ["functions", "deploy"]
    )


def test_an_unreadable_iam_policy_warns_with_the_command_to_run(
    deploy: Callable[..., Result],
) -> None:
    r = deploy(*BASE, FAKE_FAIL="projects get-iam-policy", **EXISTING)
    assert r.code == 0, r.output
    assert not r.gcloud("projects", "remove-iam-policy-binding")
    assert "gcloud projects remove-iam-policy-binding demo-x" in r.stderr
    assert "roles/storage.objectAdmin" in r.stderr


# --- what a stranger with a script can spend --------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [((), "10"), (("--max-instances", "3"), "3")])
def test_max_instances_cap_a_flood(
    deploy: Callable[..., Result], args: tuple[str, ...], expected: str
) -> None:
    """A flood of requests scales out to --max-instances at most, never to the quota."""
    r = deploy(*BASE, *args, **EXISTING)
    assert r.code == 0, r.output
    assert flags(r.one("functions", "deploy"))["max-instances"] == expected


def test_token_budgets_reach_the_function(deploy: Callable[..., Result]) -> None:
    """One account, or many, cannot spend more Gemini tokens a day than the budgets allow."""
    r = deploy(*BASE, "--user-daily-tokens", "50000", "--daily-tokens=900000", **EXISTING)
    assert r.code == 0, r.output
    env = env_vars(r.one("functions", "deploy"))
    assert (env["USER_DAILY_TOKENS"], env["DAILY_TOKENS"]) == ("50000", "900000")
    assert "no limit" not in r.stderr


@pytest.mark.parametrize("option", ["--user-daily-tokens", "--daily-tokens"])
def test_a_zero_budget_is_no_limit_and_says_so(deploy: Callable[..., Result], option: str) -> None:
    r = deploy(*BASE, option, "0", **EXISTING)
    assert r.code == 0, r.output
    name = option[2:].replace("-", "_").upper()
    assert env_vars(r.one("functions", "deploy"))[name] == "0"
    assert f"{option} 0 is no limit" in r.stderr


def test_app_check_is_enforced_by_default(deploy: Callable[..., Result]) -> None:
    """A script that is not the app gets no App Check token, so it is refused, anonymous or not."""
    r = deploy(*BASE, **EXISTING)
    assert r.code == 0, r.output
    env = env_vars(r.one("functions", "deploy"))
    assert env["APP_CHECK"] == "enforce"
    assert env["ANONYMOUS_USERS"] == "allow", "said explicitly, not left to the function"
    assert "App Check is off" not in r.stderr
    assert "X-Firebase-AppCheck" in r.stdout, "the example call carries the App Check header"


def test_no_app_check_says_what_it_costs(deploy: Callable[..., Result]) -> None:
    """Without App Check, free accounts can spend the budget: the operator is told, and
    anonymous accounts, which a script makes at no cost, are refused."""
    r = deploy(*BASE, "--no-app-check", **EXISTING)
    assert r.code == 0, r.output
    env = env_vars(r.one("functions", "deploy"))
    assert (env["APP_CHECK"], env["ANONYMOUS_USERS"]) == ("off", "deny")
    assert "warning: App Check is off" in r.stderr
    assert "can spend the daily token budget" in r.stderr
    assert "only the budgets bound the bill" in r.stderr
    assert "X-Firebase-AppCheck" not in r.stdout


@pytest.mark.parametrize(
    ("args", "app_check", "anonymous", "warning"),
    [
        (("--anonymous-users", "deny"), "enforce", "deny", None),
        (("--no-app-check", "--anonymous-users", "allow"), "off", "allow", "App Check is off"),
        (("--app-check", "off"), "off", "deny", "App Check is off"),
        (("--app-check", "monitor"), "monitor", "deny", "App Check only monitors"),
        (("--app-check=monitor", "--anonymous-users=allow"), "monitor", "allow", "only monitors"),
        (("--app-check", "enforce"), "enforce", "allow", None),
    ],
)
def test_app_check_and_anonymous_users_options(
    deploy: Callable[..., Result],
    args: tuple[str, ...],
    app_check: str,
    anonymous: str,
    warning: str | None,
) -> None:
    r = deploy(*BASE, *args, **EXISTING)
    assert r.code == 0, r.output
    env = env_vars(r.one("functions", "deploy"))
    assert (env["APP_CHECK"], env["ANONYMOUS_USERS"]) == (app_check, anonymous)
    if warning is None:
        assert "App Check" not in r.stderr
    else:
        assert warning in r.stderr and "only the budgets bound the bill" in r.stderr
    if anonymous == "allow" and app_check != "enforce":
        assert "anonymous accounts are allowed" in r.stderr


# --- Firestore clean-up ------------------------------------------------------------------------


def test_ledger_documents_expire_like_rate_limit_counters(deploy: Callable[..., Result]) -> None:
    """Budget documents (one per user and day, 64 shards a day) must not pile up forever."""
    r = deploy(*BASE, **EXISTING)
    assert r.code == 0, r.output
    ttls = r.gcloud("firestore", "fields", "ttls", "update")
    assert [flags(a)["collection-group"] for a in ttls] == [
        "rateLimits",
        "budgetUsers",
        "budgetShards",
    ]
    for argv in ttls:
        assert argv[4] == "expireAt" and "enable-ttl" in flags(argv)
        assert flags(argv)["project"] == PROJECT


@pytest.mark.parametrize("group", ["rateLimits", "budgetUsers", "budgetShards"])
def test_a_failed_ttl_policy_only_warns(deploy: Callable[..., Result], group: str) -> None:
    r = deploy(*BASE, FAKE_FAIL=f"--collection-group={group}", **EXISTING)
    assert r.code == 0, r.output
    assert f"could not set the TTL on {group}.expireAt" in r.stderr
    assert len(r.gcloud("firestore", "fields", "ttls", "update")) == 3
    assert r.gcloud("functions", "deploy")


def test_a_failing_gcloud_step_stops_the_script(deploy: Callable[..., Result]) -> None:
    r = deploy(*BASE, FAKE_FAIL="functions deploy", **EXISTING)
    assert r.code != 0
    assert not r.gcloud("run", "services", "update")


def test_help(deploy: Callable[..., Result]) -> None:
    r = deploy("--help", gcloud=False)
    assert r.code == 0
    for word in (
        "--project",
        "--region",
        "--vertex",
        "--set-gemini-key",
        "--allowed-origins",
        "--concurrency",
        "--cpu",
        "--memory",
        "--min-instances",
        "--max-instances",
        "--user-daily-tokens",
        "--daily-tokens",
        "--app-check",
        "--no-app-check",
        "--anonymous-users",
        "--files-bucket",
        "--dry-run",
        "npm install -g firebase-tools",
    ):
        assert word in r.stdout
    assert "docs/benchmark.md" in r.stdout and "README" not in r.stdout
    assert r.calls == []


def test_deploy_script_is_executable_bash_with_strict_mode() -> None:
    assert os.access(DEPLOY, os.X_OK)
    lines = DEPLOY.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines


def test_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is required (apt-get install -y shellcheck)"
    proc = subprocess.run([shellcheck, str(DEPLOY)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the files bucket --------------------------------------------------------------------------


def test_a_legacy_firebase_default_bucket_is_used_as_it_is(deploy: Callable[..., Result]) -> None:
    r = deploy(*BASE, **{**EXISTING, "FAKE_BUCKETS": f"gs://{LEGACY_BUCKET}"})
    assert r.code == 0, r.output
    assert not r.curl() and not r.gcloud("storage", "buckets", "create")
    assert_bucket_access(r, LEGACY_BUCKET)
    assert firebase_targets(r) == "firestore:rules,firestore:indexes,storage"


@pytest.mark.parametrize("source", ["option", "env"])
def test_a_bucket_of_ones_own_is_created_when_absent(
    deploy: Callable[..., Result], source: str
) -> None:
    if source == "option":
        r = deploy(*BASE, "--files-bucket", "workshop-files-x", **EXISTING)
    else:
        r = deploy(*BASE, FILES_BUCKET="workshop-files-x", **EXISTING)
    assert r.code == 0, r.output
    assert [a[3] for a in r.gcloud("storage", "buckets", "describe")] == ["gs://workshop-files-x"]
    created = r.one("storage", "buckets", "create")
    assert created[3] == "gs://workshop-files-x"
    f = flags(created)
    assert f["location"] == REGION and f["project"] == PROJECT
    assert "uniform-bucket-level-access" in f and "public-access-prevention" in f
    assert not r.curl()
    assert_bucket_access(r, "workshop-files-x")
    # Not a Firebase bucket: IAM alone guards it, so no Storage rules are deployed.
    assert firebase_targets(r) == "firestore:rules,firestore:indexes"
    assert "not the Firebase default bucket" in r.stdout


def test_an_existing_bucket_of_ones_own_is_not_touched(deploy: Callable[..., Result]) -> None:
    fake = {**EXISTING, "FAKE_BUCKETS": "gs://workshop-files-x"}
    r = deploy(*BASE, "--files-bucket=workshop-files-x", **fake)
    assert r.code == 0, r.output
    assert not r.gcloud("storage", "buckets", "create") and not r.curl()
    assert_bucket_access(r, "workshop-files-x")


def test_naming_the_firebase_default_bucket_creates_it_through_firebase(
    deploy: Callable[..., Result],
) -> None:
    r = deploy(*BASE, "--files-bucket", FIREBASE_BUCKET, **{**EXISTING, "FAKE_BUCKETS": ""})
    assert r.code == 0, r.output
    assert not r.gcloud("storage", "buckets", "create")
    assert len(r.curl()) == 1 and r.curl()[0]["stdin"] == f"Authorization: Bearer {TOKEN}\n"
    assert_bucket_access(r, FIREBASE_BUCKET)


def test_a_failed_bucket_creation_stops_before_the_function(deploy: Callable[..., Result]) -> None:
    r = deploy(*BASE, FAKE_FAIL="curl", **{**EXISTING, "FAKE_BUCKETS": ""})
    assert r.code != 0
    assert "Blaze" in r.stderr and "--files-bucket" in r.stderr
    assert not r.gcloud("storage", "buckets", "add-iam-policy-binding")
    assert not r.gcloud("functions", "deploy")
    assert TOKEN not in r.output


# --- infra files and the upload list ---------------------------------------------------------


def test_firebase_json() -> None:
    config = json.loads((REPO / "infra" / "firebase.json").read_text())
    assert config["firestore"] == {"rules": "firestore.rules", "indexes": "firestore.indexes.json"}
    assert config["storage"] == {"rules": "storage.rules"}
    emulators = config["emulators"]
    assert emulators["firestore"]["port"] == 8085
    assert emulators["auth"]["port"] == 9099
    assert emulators["ui"]["enabled"] is False
    rewrite = config["hosting"]["rewrites"][0]
    assert rewrite["source"] == "/api/chat" and rewrite["run"]["serviceId"] == "chat"


def test_storage_rules_deny_every_client() -> None:
    """Only the function (IAM, not rules) reads and writes the files."""
    rules = (REPO / "infra" / "storage.rules").read_text()
    code = "\n".join(line.split("//")[0] for line in rules.splitlines())
    assert "rules_version = '2';" in code and "service firebase.storage" in code
    allows = [line.strip() for line in code.splitlines() if "allow" in line]
    assert allows == ["allow read, write: if false;"]
    assert "match /{allPaths=**}" in code


def test_firestore_indexes_exempt_the_large_fields_no_query_uses() -> None:
    """Index fanout is most of a write's latency: a message's text (rewritten at every
    checkpoint), the head's step counters (every claim) and the summaries are never queried,
    so they are not indexed; what the function queries messages by stays indexed."""
    indexes = json.loads((REPO / "infra" / "firestore.indexes.json").read_text())
    assert indexes["indexes"] == []
    exempt = {(o["collectionGroup"], o["fieldPath"]) for o in indexes["fieldOverrides"]}
    assert all(o["indexes"] == [] and o["ttl"] is False for o in indexes["fieldOverrides"])
    assert exempt == {
        ("messages", "parts"),
        ("sessions", "steps"),
        ("sessions", "outcomes"),
        ("steps", "summary"),
    }
    queried = set()
    for path in (REPO / "functions" / "workshop_chat" / "firestore").glob("*.py"):
        code = path.read_text()
        queried |= set(re.findall(r'FieldFilter\(\s*"(\w+)"', code))
        queried |= set(re.findall(r'order_by\(\s*"(\w+)"', code))
    assert queried == {"createdAt", "seq", "status"}  # messages, ordered and filtered by these
    assert not {field for _, field in exempt} & queried


def _uploaded(source: Path) -> set[str]:
    gcloud = shutil.which("gcloud")
    assert gcloud, "the Google Cloud CLI is required (it also runs the Firestore emulator)"
    env = {
        **os.environ,
        "CLOUDSDK_CONFIG": str(source.parent / ".gcloud-config"),
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
    }
    proc = subprocess.run(
        [gcloud, "meta", "list-files-for-upload", str(source)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return {line.strip() for line in proc.stdout.splitlines() if line.strip()}


def test_gcloudignore_uploads_only_the_function_source(tmp_path: Path) -> None:
    """gcloud's own matcher, on a tree with every kind of clutter."""
    src = tmp_path / "functions"
    keep = [
        "main.py",
        "requirements.txt",
        "workshop_chat/__init__.py",
        "workshop_chat/config.py",
        "workshop_chat/chat/prompts/generic.md",
        "workshop_chat/chat/prompts/test.md",
        "workshop_chat/sub/mod.py",
    ]
    drop = [
        ".env",
        "notes.md",
        "local.log",
        "tests/test_x.py",
        ".venv/lib/x.py",
        "venv/bin/python",
        "__pycache__/main.cpython-313.pyc",
        "workshop_chat/__pycache__/config.cpython-313.pyc",
        "workshop_chat/.env",
        "workshop_chat/test_config.py",
        ".pytest_cache/v/x",
        "workshop_chat/.DS_Store",
        "other_pkg/x.py",
    ]
    for name in keep + drop:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("x")
    shutil.copy(REPO / "functions" / ".gcloudignore", src / ".gcloudignore")
    assert _uploaded(src) == set(keep)


def test_gcloudignore_on_the_real_source() -> None:
    uploaded = _uploaded(REPO / "functions")
    assert "requirements.txt" in uploaded
    assert any(name.startswith("workshop_chat/chat/prompts/") for name in uploaded)
    allowed = {"main.py", "requirements.txt"}
    for name in uploaded:
        assert name in allowed or name.startswith("workshop_chat/"), name
        assert "__pycache__" not in name and not name.endswith(".pyc"), name


def test_spans_and_metrics_go_to_google_cloud_with_write_only_roles(
    deploy: Callable[..., Result],
) -> None:
    r = deploy(*BASE, "--trace-ratio", "0.25", **EXISTING)
    assert r.code == 0, r.output
    env = env_vars(r.one("functions", "deploy"))
    assert env["OTEL_TRACES_EXPORTER"] == "gcp_trace"
    assert env["OTEL_METRICS_EXPORTER"] == "gcp_monitoring"
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert not [k for k in env if "CAPTURE" in k], "no switch that records content"
    runtime = {
        role for member, role in project_roles(r) if member == f"serviceAccount:{RUNTIME_SA}"
    }
    assert {"roles/telemetry.tracesWriter", "roles/monitoring.metricWriter"} <= runtime
    assert not [
        role
        for role in runtime
        if role.endswith((".user", ".admin", ".viewer"))
        and ("trace" in role or "monitoring" in role)
    ]
    (enable,) = r.gcloud("services", "enable")
    assert {"telemetry.googleapis.com", "monitoring.googleapis.com"} <= set(enable)


def test_no_telemetry_sends_nothing_and_grants_neither_role(deploy: Callable[..., Result]) -> None:
    r = deploy(*BASE, "--no-telemetry", **EXISTING)
    assert r.code == 0, r.output
    env = env_vars(r.one("functions", "deploy"))
    assert (env["OTEL_TRACES_EXPORTER"], env["OTEL_METRICS_EXPORTER"]) == ("none", "none")
    roles = {role for _, role in project_roles(r)}
    assert not roles & {"roles/telemetry.tracesWriter", "roles/monitoring.metricWriter"}
