#!/usr/bin/env bash
# The seed's circuit, for real: three domains as three IDC processes on loopback, each
# with its own database, certificate and policy (GARR, GÉANT, Internet2, built from the
# real networks in topologies/), federated over mutual TLS. Books Rome → Houston once
# and weekly with the CLI, shows it end to end and in every domain, ends it everywhere,
# and tears everything down (also on failure or Ctrl-C).
#
#   deploy/federation/demo.sh            # builds target/release/sluice if needed
#   SLUICE=/path/to/sluice deploy/federation/demo.sh
#   KEEP=1 deploy/federation/demo.sh     # leave the three IDCs running; Ctrl-C ends them
#   STORE=postgres deploy/federation/demo.sh
#       # each domain on its own PostgreSQL database (a throwaway server from
#       # deploy/postgres/pg-local.sh, stopped at the end), started from the settings
#       # files in deploy/federation/postgres/, and a second GARR replica on the same
#       # database (client API on 127.0.0.1:14564): it sees what the first booked, and
#       # books and ends a GARR circuit that the first sees
#
# Ports: client APIs 127.0.0.1:14561-14563, federation 127.0.0.1:14571-14573: below the
# kernel's ephemeral range (32768-60999), so no outgoing connection can take one while
# the three start.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
SLUICE=${SLUICE:-$root/target/release/sluice}
if [[ ! -x $SLUICE ]]; then
    echo "== building sluice"
    (cd "$root" && cargo build --release --bin sluice)
fi

domains=(garr geant internet2)
declare -A api=([garr]=14561 [geant]=14562 [internet2]=14563)
declare -A fed=([garr]=14571 [geant]=14572 [internet2]=14573)
STORE=${STORE:-sqlite}
replica2=14564
[[ $STORE == sqlite || $STORE == postgres ]] || { echo "STORE is sqlite or postgres, not $STORE" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-federation.XXXXXX")
pids=()
cleanup() {
    local rc=$?
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -n ${pg_dir:-} ]]; then
        "$root/deploy/postgres/pg-local.sh" stop "$pg_dir"
        rm -rf "$pg_dir"
    fi
    if [[ $rc -ne 0 ]]; then
        echo "== FAILED (exit $rc); the IDCs' logs:" >&2
        for d in "${domains[@]}"; do
            echo "--- $d" >&2
            tail -n 30 "$work/$d.log" >&2 2>/dev/null || true
        done
        tail -n 30 "$work/garr-2.log" >&2 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for d in "${domains[@]}"; do
    for p in "${api[$d]}" "${fed[$d]}"; do
        port_free "$p" || { echo "port $p is in use: is another demo running?" >&2; exit 1; }
    done
done
port_free "$replica2" || { echo "port $replica2 is in use: is another demo running?" >&2; exit 1; }

s() { local d=$1; shift; "$SLUICE" --server "http://127.0.0.1:${api[$d]}" --user alice "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }

echo "== certificates (a development CA and one certificate per domain)"
"$SLUICE" certs --out "$work/certs" "${domains[@]}"
cp "$here"/{garr,geant,internet2}.toml "$work/"

if [[ $STORE == postgres ]]; then
    echo "== PostgreSQL: a throwaway server and one database per domain"
    # Its own folder: as root the server runs as postgres, who cannot enter $work.
    pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-federation-pg.XXXXXX")
    admin=$("$root/deploy/postgres/pg-local.sh" start "$pg_dir")
    declare -A database
    for d in "${domains[@]}"; do
        psql -q "$admin" -c "CREATE DATABASE sluice_$d"
        database[$d]="${admin%/*}/sluice_$d"
        "$SLUICE" migrate --database "${database[$d]}"
    done
fi

echo "== starting three IDCs ($STORE)"
for d in "${domains[@]}"; do
    if [[ $STORE == postgres ]]; then
        # The committed settings file, with this demo's database and certificates.
        SLUICE_DATABASE=${database[$d]} SLUICE_FEDERATION=$work/$d.toml \
            "$SLUICE" serve --config "$here/postgres/$d.toml" >"$work/$d.log" 2>&1 &
    else
        "$SLUICE" serve --listen "127.0.0.1:${api[$d]}" --data-dir "$work/$d" \
            --topology "$root/topologies/$d.toml" --federation "$work/$d.toml" \
            --hold-timeout 60s >"$work/$d.log" 2>&1 &
    fi
    pids+=($!)
done
for d in "${domains[@]}"; do
    for _ in $(seq 100); do
        grep -q "federation on" "$work/$d.log" 2>/dev/null && break
        sleep 0.1
    done
    grep "sluice: domain" "$work/$d.log" || { echo "$d did not start" >&2; exit 1; }
done
if [[ $STORE == postgres ]]; then
    echo "== a second GARR replica on the same database (client API only: on one machine"
    echo "   the federation address is the first one's)"
    "$SLUICE" serve --listen "127.0.0.1:$replica2" --database "${database[garr]}" \
        --topology "$root/topologies/garr.toml" --hold-timeout 60s >"$work/garr-2.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do grep -q "listening on" "$work/garr-2.log" 2>/dev/null && break; sleep 0.1; done
    grep "sluice: domain" "$work/garr-2.log" || { echo "the second GARR replica did not start" >&2; exit 1; }
fi
s2() { "$SLUICE" --server "http://127.0.0.1:$replica2" --user alice "$@"; }

echo "== waiting until GARR knows all three domains (Internet2 only through GÉANT)"
for _ in $(seq 150); do
    n=$(s garr domains --json | json 'len(d["domains"])')
    [[ $n -eq 3 ]] && break
    sleep 0.2
done
[[ $n -eq 3 ]] || { echo "GARR knows $n domains, not 3" >&2; s garr domains >&2; exit 1; }
s garr domains

echo "== one-off: 1 Gb/s Rome (GARR) → Houston (Internet2), across GÉANT"
src=garr:rm-1:xe-0/0/0
dst=internet2:houston:xe-0/0/0
id=$(s garr reserve "$src" "$dst" --bw 1000 --start +2m --end +2h \
    --description "Italy to Texas, as in the seed" --json | json 'd["id"]')
s garr show "$id"
segments=$(s garr show "$id" --json | json '" ".join(x["domain"] + ":" + x["state"]["summary"] for x in d["segments"])')
echo "segments: $segments"
[[ $segments == "garr:committed geant:committed internet2:committed" ]] \
    || { echo "expected three committed segments" >&2; exit 1; }
echo "-- end to end, each domain sharing what its policy allows (Internet2: states only):"
s garr status "$id"
shared=$(s garr status "$id" --json | json '" ".join(x["domain"] + ":" + (x["shared"] or "?") for x in d["domains"])')
[[ $shared == "garr:full geant:full internet2:states" ]] \
    || { echo "expected garr:full geant:full internet2:states, got $shared" >&2; exit 1; }
if [[ $STORE == postgres ]]; then
    echo "-- the same circuit from GARR's second replica (its segments are the first's to show):"
    s2 show "$id"
    seen=$(s2 show "$id" --json | json 'd["state"]["summary"]')
    [[ $seen == committed ]] || { echo "the second replica sees it $seen" >&2; exit 1; }
    echo "-- a GARR-only circuit booked on the second replica, seen by the first:"
    local_id=$(s2 reserve garr:rm-1:xe-0/0/0 garr:mi-1:xe-0/0/0 --bw 100 --start +5m --end +1h --json | json 'd["id"]')
    s garr show "$local_id" --json | json '(d["id"], d["state"]["summary"])'
    s2 terminate "$local_id" >/dev/null
fi
echo "-- what each domain holds for GARR:"
s geant list --owner peer:garr
s internet2 list --owner peer:garr

echo "== weekly: 500 Mb/s every Tuesday 14:00-18:00 Rome time, ten weeks"
series=$(s garr reserve "$src" "$dst" --bw 500 --every tue 14:00-18:00 --tz Europe/Rome \
    --count 10 --description "weekly lab" --json | json 'd["id"]')
s garr series show "$series"
for d in geant internet2; do
    n=$(s "$d" list --owner peer:garr --state committed --json | json 'len(d["reservations"])')
    echo "$d: $n committed reservations for GARR"
    # The one-off and the ten occurrences.
    [[ $n -eq 11 ]] || { echo "$d should hold 11 committed for GARR, not $n" >&2; exit 1; }
done

echo "== over Internet2's policy for GARR (at most 5000 Mb/s): refused, nothing held"
if out=$(s garr reserve "$src" "$dst" --bw 6000 --start +2m --end +1h --json 2>&1); then
    echo "a 6000 Mb/s request went through: $out" >&2; exit 1
fi
echo "$out"
[[ $(json 'd["error"]["code"], d["error"]["child"]["domain"], d["error"]["child"]["code"]' <<<"$out") \
    == "('00502', 'internet2', '00302')" ]] \
    || { echo "expected 00502 wrapping Internet2's 00302" >&2; exit 1; }
for d in "${domains[@]}"; do
    n=$(s "$d" list --state held --json | json 'len(d["reservations"])')
    [[ $n -eq 0 ]] || { echo "$d holds $n after the refusal" >&2; exit 1; }
done

echo "== ending both everywhere"
s garr terminate "$id" >/dev/null
s garr series cancel "$series" >/dev/null
for d in "${domains[@]}"; do
    n=$(s "$d" list --state committed --state held --json | json 'len(d["reservations"])')
    echo "$d: $n held or committed left"
    [[ $n -eq 0 ]] || { echo "$d still has $n" >&2; exit 1; }
done

if [[ -n ${KEEP:-} ]]; then
    echo "== the three IDCs keep running (Ctrl-C ends them):"
    for d in "${domains[@]}"; do echo "   $d: sluice --server http://127.0.0.1:${api[$d]}"; done
    wait
fi
echo "== done: three domains started, booked across, ended, torn down"
