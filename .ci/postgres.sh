# Sourced by test.sh and bench/run: a throwaway PostgreSQL cluster on loopback.
#   start_throwaway_postgres [EXTRA_POSTGRES_OPTIONS...]
# installs PostgreSQL through apt-get when it is missing, starts a cluster in a temporary
# folder on a free port (trust auth, durability off: nothing here outlives the run), exports
# PG_BIN, PG_PORT, PG_URL (postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres) and
# stops and deletes the cluster when the calling shell exits.

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

start_throwaway_postgres() {
  if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
    printf '\n== %s\n' "installing PostgreSQL (apt-get)"
    if [ "$(id -u)" != 0 ]; then
      echo "PostgreSQL is not installed and this is not root: apt-get install postgresql" >&2
      return 1
    fi
    # No default cluster: we start our own.
    mkdir -p /etc/postgresql-common
    grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf \
      || echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Options::=--force-confold \
      postgresql postgresql-contrib >/dev/null
  fi
  PG_BIN=$(pg_bin)
  PG_DIR=$(mktemp -d /tmp/chatql-pg.XXXXXX)
  PG_AS=()
  if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
    chown postgres:postgres "$PG_DIR"
    PG_AS=(runuser -u postgres --)
  fi
  PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  trap stop_throwaway_postgres EXIT
  printf '\n== %s\n' "starting a throwaway PostgreSQL on 127.0.0.1:$PG_PORT"
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 \
    --locale=C.UTF-8 >/dev/null
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/data/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR/data -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 $*" \
    start >/dev/null
  export PG_BIN PG_PORT
  export PG_URL="postgresql+asyncpg://postgres@127.0.0.1:$PG_PORT/postgres"
}

stop_throwaway_postgres() {
  if [ -n "${PG_DIR:-}" ]; then
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
}
