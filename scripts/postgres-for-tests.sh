#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the store tests and print its SQLAlchemy URL.
# Usage: eval "$(scripts/postgres-for-tests.sh start)"; ...; scripts/postgres-for-tests.sh stop
set -euo pipefail
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -z "$PGBIN" ] && command -v pg_ctl >/dev/null && PGBIN=$(dirname "$(command -v pg_ctl)")
DIR=${ICL_TEST_PGDATA:-/tmp/iclserve-test-pg}
PORT=${ICL_TEST_PGPORT:-54329}
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }

case "${1:-start}" in
  start)
    if [ -z "$PGBIN" ]; then echo "echo 'PostgreSQL is not installed: its tests will be skipped' >&2"; exit 0; fi
    as_pg "$PGBIN/pg_ctl -D $DIR stop -m fast" >/dev/null 2>&1 || true
    rm -rf "$DIR" && mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    as_pg "$PGBIN/initdb -D $DIR -U postgres --auth=trust" >/dev/null
    as_pg "$PGBIN/pg_ctl -D $DIR -o '-p $PORT -k $DIR -c listen_addresses=127.0.0.1' -l $DIR/log -w start" >/dev/null
    as_pg "$PGBIN/createdb -h 127.0.0.1 -p $PORT -U postgres iclserve_test"
    echo "export ICL_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$PORT/iclserve_test"
    ;;
  stop)
    [ -n "$PGBIN" ] && as_pg "$PGBIN/pg_ctl -D $DIR stop -m fast" >/dev/null 2>&1 || true
    ;;
esac
