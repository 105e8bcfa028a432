"""Schemathesis against the served OpenAPI document (issue 13, "How it is shown").

A real 3-node cluster (rounds over the peer links, as deployed; /v1/status and /readyz
describe real members) with an admin token, so that the admin operation is exercised with
credentials and, by the ignored_auth check, without. Schemathesis loads the document from
the running node's /v1/openapi.json and runs its stateless phases over every operation:
examples (the document's request examples), coverage (each field's boundaries and each way
of breaking the schema) and fuzzing (EXAMPLES generated cases per operation, valid and
invalid), with every check it has (`--checks all`), in its deterministic mode (the same
cases every run). The stateful phase needs links between operations, which the document
does not declare, so it would test nothing. Schemathesis leaves out the operation that
served the document itself (GET /v1/openapi.json); the test reads that one.

What counts as accepted and as refused is set in tests/schemathesis.toml (stricter than
schemathesis's defaults); tests/schemathesis_hooks.py keeps watches short and deadlines
sane, and points keep-alives at a live session, without changing whether a body is valid.

A failure prints schemathesis's report: each failing check, the request (as a curl
command) and the answer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import LocalCluster, running
from tests.schemathesis_hooks import SESSION_ENV

TOKEN = "schemathesis-admin-token"
EXAMPLES = 50  # generated cases per operation in the fuzzing phase
ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "schemathesis.toml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from running(tmp_path_factory.mktemp("schemathesis"), 3,
                       env={"PAXOSKV_ADMIN_TOKEN": TOKEN})


def schemathesis_run(cluster: LocalCluster, session: str, workdir: Path,
                     ) -> subprocess.CompletedProcess[str]:
    """Schemathesis's command line; it runs in `workdir` (where it keeps its crash cache
    for `st replay`) and writes its JUnit report there."""
    url = cluster.url(0)
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
        "run", f"{url}/v1/openapi.json", "--url", url,
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(EXAMPLES),
        "--generation-deterministic",  # derandomized: the same cases on every run
        "--workers", "1",
        "--header", f"Authorization: Bearer {TOKEN}",
        # Membership steps change the cluster under test (a fuzzed remove of a real
        # member would shrink it): tests/test_membership_cluster.py covers them.
        "--exclude-path-regex", "^/v1/admin/members/",
        "--request-timeout", "20",
        "--report", "junit", "--report-junit-path", str(workdir / "junit.xml"),
        "--no-color",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
           "PYTHONPATH": str(ROOT), "COLUMNS": "120", SESSION_ENV: session}
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=110)


def test_schemathesis_finds_no_failure(cluster: LocalCluster, tmp_path: Path) -> None:
    url = cluster.url(0)
    served = httpx.get(url + "/v1/openapi.json")
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("application/json")
    document = served.json()
    every = [f"{method.upper()} {path}" for path, methods in document["paths"].items()
             for method in methods if path != "/v1/openapi.json"]
    operations = [op for op in every if not op.startswith("POST /v1/admin/members/")]
    assert len(every) - len(operations) == 3  # the membership steps, excluded
    # A live session for the keep-alives (an hour: longer than any run).
    session = httpx.post(url + "/v1/session/open", json={"ttl_ms": 3_600_000}).json()["session"]
    started = time.monotonic()
    done = schemathesis_run(cluster, session, tmp_path)
    output = done.stdout + done.stderr
    print(output[-2500:], f"\n(schemathesis took {time.monotonic() - started:.1f} s)")
    assert done.returncode == 0, f"schemathesis found failures:\n{output[-25_000:]}"
    # Every operation was run, none skipped.
    tested = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", output)
    assert tested is not None, output[-2500:]
    assert tested.groups() == (str(len(operations)), str(len(every)),
                               str(len(operations))), tested.group(0)
    junit = (tmp_path / "junit.xml").read_text()
    assert sorted(re.findall(r'<testcase name="([^"]+)"', junit)) == sorted(operations)
    assert "<skipped" not in junit and "<failure" not in junit
    assert cluster.log_problems() == []
