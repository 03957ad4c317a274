"""The GraphQL-over-HTTP working group's audit suite (`serverAudits` of the npm package
`graphql-http`, the spec's reference implementation, pinned in `package.json` beside this file)
against the real server, `python server.py serve`, on SQLite and on PostgreSQL.

Every audit must pass but the optional ones chatql declines on purpose (`DECLINED`, by id, with
the reason; README, "Limits and the HTTP rules"). `./test.sh` installs Node.js and the package;
`audit.mjs` runs the suite and only ever fetches the server under test on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.process import serve

HERE = Path(__file__).resolve().parent
AUDIT_SECONDS = 120
# The suite's GETs send no Content-Type and no preflight header: a request a browser could send
# cross-site, which the CSRF rule of RULES.md refuses with 400 (chatql takes GET with
# `Content-Type: application/json`, as Apollo Client sends it, or with a preflight header).
CSRF = "Response status code is not 200"
DECLINED = {
    "5A70": ("notice", CSRF, 400),  # MAY accept application/x-www-form-urlencoded ... GET
    "D6D5": ("notice", CSRF, 400),  # MAY allow URL-encoded {variables} in GETs (graphql-response)
    "6A70": ("notice", CSRF, 400),  # MAY allow URL-encoded {variables} in GETs (json)
}
AUDITS = 61  # in graphql-http 1.23.1


def run_audits(url: str) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "graphql-http").is_dir():
        pytest.fail(
            "Node.js or the audit suite is missing: run ./test.sh, which installs both "
            "(or `npm ci` in tests/conformance).",
            pytrace=False,
        )
    finished = subprocess.run(
        [node, str(HERE / "audit.mjs"), url],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=AUDIT_SECONDS,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    results: list[dict[str, Any]] = json.loads(finished.stdout)
    return results


def test_every_graphql_over_http_audit_passes_but_the_declined_notices(
    database_url: str, tmp_path: Path
) -> None:
    with serve(database_url, tmp_path) as served:
        results = run_audits(f"{served.url}/graphql")
        log = served.log_lines()
    failed = {
        result["id"]: (result["status"], result["reason"], result["responseStatus"])
        for result in results
        if result["status"] != "ok"
    }
    assert failed == DECLINED
    assert Counter(result["status"] for result in results) == {
        "ok": AUDITS - len(DECLINED),
        "notice": len(DECLINED),
    }
    # Nothing the suite sent surprised the server.
    assert [line for line in log if json.loads(line)["level"] not in ("info", "debug")] == []
