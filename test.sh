#!/usr/bin/env bash
# The whole test suite, on SQLite and on PostgreSQL, from any fresh Debian machine:
# makes the virtualenv, installs PostgreSQL, Chromium and Node.js (with the npm packages of
# tests/conformance) when they are missing, starts a throwaway cluster on
# loopback, runs ruff, mypy and pytest, and stops the cluster. Extra arguments go to pytest.
# With CHATQL_TEST_DATABASE_URL already set, that PostgreSQL is used and none is started.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

step() { printf '\n== %s\n' "$*"; }

# ---- Python environment --------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.chatql-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  step "installing chatql and its test tools"
  .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
  echo "$want" > "$stamp"
fi

# ---- Chromium (the explorer's browser test) -------------------------------------------
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  step "installing Chromium and ChromeDriver (apt-get)"
  if [ "$(id -u)" != 0 ]; then
    echo "Chromium is not installed and this is not root: apt-get install chromium chromium-driver" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# ---- Node (the GraphQL-over-HTTP audit suite: tests/test_conformance.py) ---------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  step "installing Node.js and npm (apt-get)"
  if [ "$(id -u)" != 0 ]; then
    echo "Node.js is not installed and this is not root: apt-get install nodejs npm" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
audits=tests/conformance
locked=$(sha256sum "$audits/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$audits/node_modules/.chatql-installed" 2>/dev/null)" != "$locked" ]; then
  step "installing the audit suite (npm ci)"
  (cd "$audits" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$locked" > "$audits/node_modules/.chatql-installed"
fi

# ---- PostgreSQL ----------------------------------------------------------------------
if [ -z "${CHATQL_TEST_DATABASE_URL:-}" ]; then
  # shellcheck source=.ci/postgres.sh
  . .ci/postgres.sh
  start_throwaway_postgres
  export CHATQL_TEST_DATABASE_URL="$PG_URL"
fi

# ---- checks --------------------------------------------------------------------------
step "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
step "mypy"
.venv/bin/mypy .
# One more worker than cores: the tests wait on PostgreSQL, servers and sockets a good part of
# the time. Each worker has its own PostgreSQL database and temporary folder (tests/conftest.py).
# Coverage is off by default (it cost ~45% more test CPU): `./test.sh --cov`.
step "pytest (SQLite and PostgreSQL)"
.venv/bin/python -m pytest -n "${CHATQL_TEST_WORKERS:-$(($(nproc) + 1))}" "$@"
