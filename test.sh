#!/usr/bin/env bash
# The whole test suite, on SQLite and on PostgreSQL, from any fresh Debian machine:
# makes the virtualenv, installs PostgreSQL and Chromium when they are missing, starts a throwaway cluster on
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

# ---- PostgreSQL ----------------------------------------------------------------------
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "${CHATQL_TEST_DATABASE_URL:-}" ]; then
  if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
    step "installing PostgreSQL (apt-get)"
    if [ "$(id -u)" != 0 ]; then
      echo "PostgreSQL is not installed and this is not root: apt-get install postgresql" >&2
      exit 1
    fi
    # No default cluster: the suite starts its own.
    mkdir -p /etc/postgresql-common
    grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf \
      || echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq -o Dpkg::Options::=--force-confold postgresql >/dev/null
  fi
  BIN=$(pg_bin)
  PGDATA_DIR=$(mktemp -d /tmp/chatql-pg.XXXXXX)
  AS=()
  if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
    chown postgres:postgres "$PGDATA_DIR"
    AS=(runuser -u postgres --)
  fi
  PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  stop_pg() {
    "${AS[@]}" "$BIN/pg_ctl" -D "$PGDATA_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PGDATA_DIR"
  }
  trap stop_pg EXIT
  step "starting a throwaway PostgreSQL on 127.0.0.1:$PORT"
  "${AS[@]}" "$BIN/initdb" -D "$PGDATA_DIR/data" -U postgres --auth=trust -E UTF8 \
    --locale=C.UTF-8 >/dev/null
  "${AS[@]}" "$BIN/pg_ctl" -D "$PGDATA_DIR/data" -l "$PGDATA_DIR/data/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGDATA_DIR/data -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null
  export CHATQL_TEST_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:$PORT/postgres"
fi

# ---- checks --------------------------------------------------------------------------
step "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
step "mypy"
.venv/bin/mypy .
step "pytest (SQLite and PostgreSQL)"
.venv/bin/python -m pytest --cov --cov-report=term:skip-covered "$@"
