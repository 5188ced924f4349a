# A throwaway PostgreSQL for the tests, sourced by .ci/run: initdb into a temp
# dir as the unprivileged `postgres` user (the server refuses root), listening
# on 127.0.0.1 and on a socket in that dir, every write unsynced (it is thrown
# away). `postgres_up` exports SWEEP_TEST_PG (a URL where tests may create
# databases); `postgres_down` stops it and removes the dir, and is safe to call
# twice. .ci/run traps every service's `NAME_down` on EXIT, so it stops on every exit path.
# Recipe: ../shared/recipes/postgres-throwaway.sh.

postgres_up() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ ! -x "$bin/initdb" ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; } \
      >/dev/null 2>&1 || { echo "warning: could not install postgresql"; return 1; }
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  PG_AS=()
  [ "$(id -u)" = 0 ] && PG_AS=(runuser -u postgres --)
  PG_BIN=$bin
  PG_TMP=$(mktemp -d /tmp/sweep-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres: "$PG_TMP"
  # A free port: the kernel's choice for a socket bound to port 0.
  PG_PORT=${PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_TMP/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$PG_TMP/initdb.log" 2>&1 \
    || { cat "$PG_TMP/initdb.log"; return 1; }
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -t 60 -o \
    "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_TMP -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || { cat "$PG_TMP/server.log"; return 1; }
  export SWEEP_TEST_PG="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  echo "postgresql up: $SWEEP_TEST_PG (socket in $PG_TMP)"
}

postgres_down() {
  [ -n "${PG_TMP:-}" ] || return 0
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_TMP"
  PG_TMP=
}
