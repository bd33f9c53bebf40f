"""API fuzzing: schemathesis against `/api/schema/` of a real daphne.

Checks on every generated request: no server error, the status code, content type, headers and
body documented in the schema, and — with API_AUTH_REQUIRED=true — that every operation refuses
a request without credentials (`ignored_auth`: auth is never bypassed). Run with an admin token
whose `sub` is a user, so the notification centre is reached too. 2,000+ cases in
`make test-reliability`, a few hundred in `make test`.

Not checked: that the API refuses every schema-violating request (DRF ignores unknown query
parameters and body fields by design) — schemathesis' `negative_data_rejection`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from streaming.auth import authenticator

pytestmark = pytest.mark.server

CHECKS = [
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
    "response_headers_conformance", "ignored_auth",
]  # fmt: skip
ST = Path(sys.executable).with_name("st")


@dataclass(frozen=True)
class Failure:
    operation: str
    checks: tuple[str, ...]
    text: str


def schemathesis(server, tmp_path: Path, max_examples: int, headers: dict[str, str]) -> tuple[int, list[Failure]]:
    """Run the schemathesis CLI; return the number of generated cases and the failures."""
    if not ST.exists() and shutil.which("st") is None:
        pytest.fail("schemathesis is not installed (requirements-dev.txt)")
    reports = tmp_path / "junit"
    argv = [str(ST if ST.exists() else shutil.which("st")), "run", f"{server.http}/api/schema/?format=json",
            "--checks", ",".join(CHECKS), "--max-examples", str(max_examples), "--no-color",
            "--report", "junit", "--report-dir", str(reports), "--workers", "2"]  # fmt: skip
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=1500)
    generated = re.search(r"(\d+) generated", run.stdout)
    assert generated, run.stdout[-3000:] + run.stderr[-3000:]
    failures = []
    for testcase in ElementTree.parse(next(reports.glob("*.xml"))).iter("testcase"):
        for failure in testcase.iter("failure"):
            for block in re.split(r"\n(?=\d+\. Test Case ID)", failure.text or ""):
                checks = tuple(sorted(set(re.findall(r"^- (ST\d+)", block, re.MULTILINE))))
                if checks:
                    failures.append(Failure(testcase.get("name"), checks, block))
    return int(generated.group(1)), failures


@pytest.fixture(scope="module")
def api_server(live_server_factory):
    return live_server_factory(API_AUTH_REQUIRED="true", CLIENT_RATE_LIMIT="0")


@pytest.fixture(scope="module")
def open_api_server(live_server_factory):
    return live_server_factory(CLIENT_RATE_LIMIT="0")


def admin_token() -> str:
    return authenticator.create_access_token({"sub": "fuzz-admin", "role": "admin", "channels": ["private-*"]})


@pytest.mark.parametrize(
    "max_examples", [pytest.param(5, id="fast"), pytest.param(60, id="full", marks=pytest.mark.reliability)]
)
@pytest.mark.timeout(1800)
def test_schemathesis_finds_no_server_error_schema_mismatch_or_auth_bypass(api_server, tmp_path, max_examples, figure):
    generated, failures = schemathesis(api_server, tmp_path, max_examples, {"Authorization": f"Bearer {admin_token()}"})
    figure(cases=generated, failures=len(failures))
    assert not failures, "\n\n".join(f"{f.operation} {f.checks}\n{f.text}" for f in failures)
    assert generated >= (2000 if max_examples >= 60 else 300)


@pytest.mark.reliability
@pytest.mark.timeout(1800)
def test_schemathesis_with_anonymous_access_allowed(open_api_server, tmp_path, figure):
    """The default configuration (API_AUTH_REQUIRED=false): the schema says `{}` (no
    credentials) is allowed, and nothing breaks for anonymous callers either."""
    generated, failures = schemathesis(open_api_server, tmp_path, 30, {})
    figure(cases=generated, failures=len(failures))
    assert not failures, "\n\n".join(f"{f.operation} {f.checks}\n{f.text}" for f in failures)


def test_an_unroutable_api_url_gets_the_json_error_shape(api_server):
    """Found by fuzzing: a path parameter of the wrong type matched no route and got Django's HTML 404."""
    for path in ("/api/notifications/not-a-number/read/", "/ws/no-such-endpoint", "/api/nothing"):
        response = httpx.get(api_server.http + path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json()["type"] == "not_found"
    page = httpx.get(api_server.http + "/no-such-page")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("depth, status", [(200, 202), (201, 400), (1000, 400)])
def test_deeply_nested_content_over_http_is_refused_not_a_server_error(api_server, depth, status):
    """Found by fuzzing: content nested deeper than the encoder's limit was a 500."""
    body = '{"channel": "deep", "message": {"content": ' + "[" * depth + "]" * depth + "}}"
    response = httpx.post(
        api_server.http + "/ws/send-to-channel",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {admin_token()}"},
    )
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["fields"]["message"]["content"]
