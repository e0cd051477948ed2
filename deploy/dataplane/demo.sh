#!/usr/bin/env bash
# A circuit from booking to packets, for real: two hosts and two virtual routers as
# network namespaces, one `sluice agent` process per router (Linux backend, mutual TLS),
# and an IDC (`sluice serve --agents`) for their domain (lab.toml). Checks the topology
# against the agents, books 200 Mb/s host A → host B with the CLI, pings and measures it
# with iperf3 while best effort floods the same link, ends it, checks that nothing of it
# is left on either router, and tears everything down (also on failure or Ctrl-C).
# Needs root, iproute2, iperf3, ping and python3 (.ci/run installs them).
#
#   deploy/dataplane/demo.sh            # builds target/release/sluice if needed
#   SLUICE=/path/to/sluice deploy/dataplane/demo.sh
#
# Ports: the IDC's API on 127.0.0.1:14581, the agents on 14591 (r1) and 14592 (r2).
#
#  hA h0 ── p0 r1 p1 ── p0 r2 p1 ── h0 hB     10.0.0.0/30, 10.1.0.0/30, 10.2.0.0/30
#  circuit: hA c0 (VNI 150) ── r1 edge VLAN 150 ─ r1 ─ r2 ─ r2 edge VLAN 160 ── hB c0 (VNI 160)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
SLUICE=${SLUICE:-$root/target/release/sluice}
[[ $(id -u) -eq 0 ]] || { echo "the data plane demo makes network namespaces: run it as root" >&2; exit 1; }
for tool in ip tc iperf3 ping python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
if [[ ! -x $SLUICE ]]; then
    echo "== building sluice"
    (cd "$root" && cargo build --release --bin sluice)
fi

api=14581
ns=(ha r1 r2 hb)
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-dataplane.XXXXXX")
pids=()
cleanup() {
    local rc=$?
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ $rc -ne 0 ]]; then
        echo "== FAILED (exit $rc); the logs:" >&2
        for f in idc r1 r2; do
            echo "--- $f" >&2
            tail -n 30 "$work/$f.log" >&2 2>/dev/null || true
        done
    fi
    for n in "${ns[@]}"; do ip netns del "sluice-demo-$n" 2>/dev/null || true; done
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $api 14591 14592; do
    port_free "$p" || { echo "port $p is in use: is another demo running?" >&2; exit 1; }
done
for n in "${ns[@]}"; do
    if ip netns list | grep -qw "sluice-demo-$n"; then
        echo "namespace sluice-demo-$n exists: is another demo running?" >&2; exit 1
    fi
done

s() { "$SLUICE" --server "http://127.0.0.1:$api" --user alice "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }
in_ns() { local n=$1; shift; ip netns exec "sluice-demo-$n" "$@"; }

echo "== the lab: hosts hA, hB and routers r1, r2 as namespaces, veth links"
for n in "${ns[@]}"; do ip netns add "sluice-demo-$n"; ip -n "sluice-demo-$n" link set lo up; done
link() { # a adev b bdev net
    ip link add "sd-$5a" netns "sluice-demo-$1" type veth peer name "sd-$5b" netns "sluice-demo-$3"
    ip -n "sluice-demo-$1" link set "sd-$5a" name "$2"
    ip -n "sluice-demo-$3" link set "sd-$5b" name "$4"
    ip -n "sluice-demo-$1" addr add "10.$5.0.2/30" dev "$2"
    ip -n "sluice-demo-$3" addr add "10.$5.0.1/30" dev "$4"
    ip -n "sluice-demo-$1" link set "$2" up
    ip -n "sluice-demo-$3" link set "$4" up
}
link ha h0 r1 p0 0
link r1 p1 r2 p0 1
link r2 p1 hb h0 2
for r in r1 r2; do in_ns "$r" sysctl -qw net.ipv4.ip_forward=1; done
ip -n sluice-demo-ha route add 10.0.0.0/8 via 10.0.0.1
ip -n sluice-demo-r1 route add 10.2.0.0/30 via 10.1.0.1
ip -n sluice-demo-r2 route add 10.0.0.0/30 via 10.1.0.2
ip -n sluice-demo-hb route add 10.0.0.0/8 via 10.2.0.2
# The hosts' ends of the circuit (customer equipment): VXLAN with the circuit's VLAN at
# their router's edge port as VNI, and static neighbours (no ARP in the timings).
ip -n sluice-demo-ha link add c0 type vxlan id 150 local 10.0.0.2 remote 10.0.0.1 dev h0 dstport 4789 nolearning
ip -n sluice-demo-hb link add c0 type vxlan id 160 local 10.2.0.1 remote 10.2.0.2 dev h0 dstport 4789 nolearning
ip -n sluice-demo-ha addr add 192.168.150.1/24 dev c0
ip -n sluice-demo-hb addr add 192.168.150.2/24 dev c0
for h in ha hb; do ip -n "sluice-demo-$h" link set c0 up; done
mac() { ip -n "sluice-demo-$1" -j link show dev c0 | json 'd[0]["address"]'; }
ip -n sluice-demo-ha neigh replace 192.168.150.2 lladdr "$(mac hb)" dev c0 nud permanent
ip -n sluice-demo-hb neigh replace 192.168.150.1 lladdr "$(mac ha)" dev c0 nud permanent

echo "== certificates (a development CA; the IDC's and each agent's)"
"$SLUICE" certs --out "$work/certs" lab r1 r2 >/dev/null
cp "$here"/{lab,r1,r2,agents}.toml "$work/"

echo "== two agents (Linux backend, mutual TLS) and the IDC"
for r in r1 r2; do
    port=$([[ $r == r1 ]] && echo 14591 || echo 14592)
    "$SLUICE" agent --config "$work/$r.toml" --listen "127.0.0.1:$port" \
        --ca "$work/certs/ca.pem" --cert "$work/certs/$r.pem" --key "$work/certs/$r.key" \
        >"$work/$r.log" 2>&1 &
    pids+=($!)
done
"$SLUICE" serve --listen "127.0.0.1:$api" --data-dir "$work/idc" \
    --topology "$work/lab.toml" --agents "$work/agents.toml" >"$work/idc.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    s topology >/dev/null 2>&1 && break
    sleep 0.1
done
s topology >/dev/null

echo "== the topology against what the agents report"
s topology --check --agents "$work/agents.toml"

echo "== 200 Mb/s hA → hB, from now for an hour, provisioned at once"
id=$(s reserve "lab:r1:edge?vlan=150" "lab:r2:edge?vlan=160" --bw 200 --end +1h \
    --description "data plane demo" --json | json 'd["id"]')
for _ in $(seq 100); do
    applied=$(s show "$id" --json | json '" ".join(x["node"] + ":" + (x.get("state") or "-") for x in d["data_plane"])')
    [[ $applied == "r1:applied r2:applied" ]] && break
    sleep 0.1
done
s show "$id"
[[ $applied == "r1:applied r2:applied" ]] || { echo "agents: $applied" >&2; exit 1; }
in_ns ha ping -c 3 -i 0.2 -W 1 192.168.150.2

echo "== measured with iperf3: the circuit while best effort floods the same link"
in_ns hb iperf3 -s -B 192.168.150.2 -p 5201 >/dev/null 2>&1 &
pids+=($!)
in_ns hb iperf3 -s -B 10.2.0.1 -p 5202 >/dev/null 2>&1 &
pids+=($!)
for port in 5201 5202; do
    for _ in $(seq 100); do
        [[ -n $(in_ns hb ss -Htln "sport = :$port") ]] && break
        sleep 0.05
    done
done
in_ns ha iperf3 -c 10.2.0.1 -p 5202 -u -b 1500M -t 6 -J >"$work/flood.json" &
flood=$!
sleep 1
in_ns ha iperf3 -c 192.168.150.2 -p 5201 -t 4 -J >"$work/circuit.json"
wait "$flood"
rate() { json 'round(d["end"]["sum_received"]["bits_per_second"] / 1e6, 1)' <"$1"; }
circuit=$(rate "$work/circuit.json")
best=$(rate "$work/flood.json")
echo "circuit (booked 200 Mb/s): $circuit Mb/s; the best-effort flood meanwhile: $best Mb/s"
python3 -c "import sys; sys.exit(0 if $circuit >= 190 else 1)" \
    || { echo "the circuit got $circuit Mb/s of 200" >&2; exit 1; }

echo "== ending it: the agents take it away"
s terminate "$id" >/dev/null
for _ in $(seq 100); do
    states=$(s show "$id" --json | json '" ".join(x["node"] + ":" + (x.get("state") or "-") for x in d["data_plane"])')
    [[ $states == "r1:removed r2:removed" ]] && break
    sleep 0.1
done
[[ $states == "r1:removed r2:removed" ]] || { echo "agents: $states" >&2; exit 1; }
for r in r1 r2; do
    left=$(ip -n "sluice-demo-$r" -br link | awk '$1 ~ /^(vx|xc)/'
        for dev in p0 p1; do
            tc -n "sluice-demo-$r" class show dev "$dev"
            tc -n "sluice-demo-$r" filter show dev "$dev"
        done)
    extra=$(grep -Ev '^$|class htb 1:1 root|class htb 1:fffe ' <<<"$left" || true)
    [[ -z $extra ]] || { echo "left on $r: $extra" >&2; exit 1; }
done
if in_ns ha ping -c 2 -i 0.2 -W 1 192.168.150.2 >/dev/null; then
    echo "the circuit still carries traffic after it ended" >&2; exit 1
fi
echo "nothing of the circuit is left on r1 or r2"
echo "== done: booked, delivered, measured, ended, torn down"
