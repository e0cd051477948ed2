#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, for the tests, the benchmarks and the demo.
#
#   deploy/postgres/pg-local.sh start DIR   # initdb DIR if new, start on a free port,
#                                           # print the admin URL (also in DIR/url)
#   deploy/postgres/pg-local.sh stop DIR    # stop it (DIR stays; rm -rf it to forget)
#
# Needs Debian's postgresql package (the server binaries under /usr/lib/postgresql).
# Trust authentication on 127.0.0.1 only; the superuser is "sluice". As root the server
# runs as the postgres user (PostgreSQL refuses to run as root).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[[ -n "$cmd" && -n "$dir" ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[[ -x "$bin/pg_ctl" ]] || { echo "$0: no PostgreSQL server found (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ $(id -u) == 0 ]]; then
        chown postgres: "$dir"
        runuser -u postgres -- test -x "$dir" \
            || { echo "$0: the postgres user cannot reach $dir (a parent folder is private)" >&2; exit 1; }
    fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        as_owner "$bin/initdb" -D "$dir/data" -U sluice --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # Sized for tests: many short-lived databases and a few dozen connections each.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=300 -c shared_buffers=128MB -c fsync=on" >/dev/null \
        || { tail -20 "$dir/server.log" >&2; exit 1; }
    url="postgres://sluice@127.0.0.1:$port/postgres"
    echo "$url" >"$dir/url"
    echo "$url"
    ;;
stop)
    [[ -d "$dir/data" ]] || exit 0
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
