"""The committed `schema.graphql`: what `export-schema` prints, and within the contract.

Regenerate it with `python server.py export-schema > schema.graphql`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.process import ROOT, SERVER

SCHEMA_FILE = ROOT / "schema.graphql"
# CI lays a copy of shared/ beside the clone; so are the worktrees.
CHECK_CONTRACT = ROOT.parent / "shared" / "tools" / "check_contract.py"
REGENERATE = "python server.py export-schema > schema.graphql"
# The contract extensions chatql implements (shared/api/NAME.graphql).
EXTENSIONS = "sync,assistant,organize"


def test_the_committed_schema_is_what_export_schema_prints() -> None:
    exported = subprocess.run(
        [sys.executable, str(SERVER), "export-schema"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    assert SCHEMA_FILE.read_text() == exported.stdout, f"schema.graphql is stale: run {REGENERATE}"


def test_the_committed_schema_matches_the_contract_and_its_extensions() -> None:
    if not CHECK_CONTRACT.exists():
        # CI always has shared/ beside the clone; a bare clone elsewhere may not.
        if os.environ.get("CI"):
            pytest.fail(f"{CHECK_CONTRACT} is missing: shared/ belongs beside the clone")
        pytest.skip(f"{CHECK_CONTRACT} is not beside this clone")
    checked = subprocess.run(
        [sys.executable, str(CHECK_CONTRACT), str(SCHEMA_FILE), "--with", EXTENSIONS],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (checked.returncode, checked.stdout) == (0, "matches the contract\n")
