"""Firestore security rules: the JavaScript rules tests, run against the session's emulator.

Frontends may read only their own sessions and never write; the Cloud Function writes with the
Admin SDK. tests/js/rules.test.mjs checks that with @firebase/rules-unit-testing; this runs it
under pytest so that `./test.sh` cannot pass while the rules are wrong.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests import support
from tests.support import chat_body, sse_chunks, text_of

JS = support.ROOT / "tests" / "js"
NEEDED = ("@firebase/rules-unit-testing", "firebase")


def node_or_fail() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the Firestore rules tests need Node 20 (see test.sh)")
    missing = [
        name for name in NEEDED if not (JS / "node_modules" / name / "package.json").exists()
    ]
    if missing:
        pytest.fail(
            f"tests/js/node_modules lacks {', '.join(missing)}: run ./test.sh, which installs "
            "them, or `npm ci` in tests/js"
        )
    return node


def counts(output: str) -> dict[str, int]:
    """node --test ends with `# tests N`, `# pass N`, `# fail N`, ... lines."""
    return {key: int(value) for key, value in re.findall(r"^# (\w+) (\d+)$", output, re.M)}


@pytest.fixture(scope="module")
def rules_run(emulator) -> subprocess.CompletedProcess[str]:
    """One run of the node tests; they load infra/firestore.rules into the emulator."""
    node = node_or_fail()
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": emulator, "GCLOUD_PROJECT": support.PROJECT}
    return subprocess.run(
        [node, "--test", "--test-reporter=tap", "tests/js/rules.test.mjs"],
        cwd=support.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_security_rules_tests_pass_against_the_emulator(rules_run):
    output = rules_run.stdout + rules_run.stderr
    assert rules_run.returncode == 0, output[-4000:]
    summary = counts(rules_run.stdout)
    assert summary.get("tests", 0) > 0, output[-4000:]
    assert summary.get("pass") == summary["tests"]
    assert summary.get("fail") == 0
    assert summary.get("cancelled", 0) == 0
    assert summary.get("skipped", 0) == 0 and summary.get("todo", 0) == 0


def test_the_function_still_writes_once_the_rules_are_loaded(rules_run, client, db):
    """The rules bind frontends only: the function's Admin-SDK reads and writes go on."""
    response = client.post("/", json=chat_body("After the rules"))
    assert text_of(sse_chunks(response.data)) == "Echo: After the rules"
    assert db.document("sessions/s1").get().to_dict()["ownerUid"] == "local-user"
    history = client.get("/sessions/s1/steps/empathize/messages")
    assert [m["id"] for m in history.get_json()["messages"]] == ["m1", "m1~reply"]
