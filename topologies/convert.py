#!/usr/bin/env python3
"""Convert an Internet Topology Zoo network (as packaged by topohub, reduced to JSON) into
a Sluice domain topology file (TOML), and check such files.

Convert (writes TOML to stdout; same input and options give byte-identical output):

    python3 topologies/convert.py SRC.json --domain ID --description TEXT \
        [--capacity-mbps 100000] [--peer NODE=PEER_DOMAIN:PEER_NODE:PEER_PORT ...] > OUT.toml

Check one or more generated files (structure, references, ids; with several files, also
that every `peer` names an existing port in another loaded file whose peer points back):

    python3 topologies/convert.py --check FILE.toml [FILE.toml ...]

The source JSON has `nodes` [{id, name, lon, lat}] and `links` [{a, b, km}]. Mapping:
  * node id = name lowercased, runs of characters other than [a-z0-9] -> '-', '-' stripped
    at both ends; a clash gets "-2", "-3", ... in file order.
  * each node gets two client edge ports xe-0/0/0 and xe-0/0/1 (VLANs 100-999, 10 Gb/s);
  * each link end gets its own port et-N/0/0 (N = 1, 2, ... per node in link order,
    VLANs 2-4094, the link's capacity);
  * link id = "<a>--<b>" ("-2", "-3", ... for further links between the same pair),
    capacity = --capacity-mbps, metric = max(1, round(km)); self-loops are skipped;
  * each --peer adds a port xe-9/0/K (K = 0, 1, ... per node, VLANs 3000-3099, 10 Gb/s),
    and makes its node a VLAN-translating border node
    facing the given port of another domain.
Python 3.11+, standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys

PROVENANCE = (
    "Converted from the Internet Topology Zoo as packaged by topohub 1.5.1 "
    "(MIT licence, see LICENSE-topohub)"
)

EDGE_PORTS = ("xe-0/0/0", "xe-0/0/1")
EDGE_VLANS = "100-999"
EDGE_CAPACITY = 10000
TRUNK_VLANS = "2-4094"
PEER_VLANS = "3000-3099"
PEER_CAPACITY = 10000

ID_RE = re.compile(r"[a-z0-9._-]+")
PORT_RE = re.compile(r"[a-z0-9._/-]+")


class ConvertError(Exception):
    pass


# --------------------------------------------------------------------------- conversion


def slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s


def toml_str(s: str) -> str:
    # JSON string escapes (\" \\ \n \uXXXX ...) are all valid in a TOML basic string.
    return json.dumps(s, ensure_ascii=False)


def toml_float(x) -> str:
    v = float(x)
    if v != v or v in (float("inf"), float("-inf")):
        raise ConvertError(f"coordinate {x!r} is not a finite number")
    return repr(v)


def shell_quote(arg: str) -> str:
    """Quote for a POSIX shell, preferring readable double quotes."""
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", arg):
        return arg
    if not re.search(r'["$`\\!]', arg):
        return '"' + arg + '"'
    return shlex.quote(arg)


def parse_peer(text: str) -> tuple[str, str]:
    node, sep, stp = text.partition("=")
    parts = stp.split(":")
    if not sep or not node or len(parts) != 3 or not all(parts):
        raise ConvertError(
            f"--peer {text!r}: expected NODE_ID=PEER_DOMAIN:PEER_NODE:PEER_PORT"
        )
    if not ID_RE.fullmatch(parts[0]) or not ID_RE.fullmatch(parts[1]):
        raise ConvertError(f"--peer {text!r}: bad peer domain or node id")
    if not PORT_RE.fullmatch(parts[2]):
        raise ConvertError(f"--peer {text!r}: bad peer port name")
    return node, stp


def convert(src: str, domain: str, description: str, capacity: int,
            peers: list[str], command: str) -> tuple[str, list[str]]:
    """Returns the TOML text and a list of notes about the source data."""
    if not ID_RE.fullmatch(domain):
        raise ConvertError(f"--domain {domain!r} is not a valid id ([a-z0-9._-]+)")
    if capacity <= 0:
        raise ConvertError("--capacity-mbps must be positive")
    with open(src, encoding="utf-8") as f:
        data = json.load(f)
    notes: list[str] = []

    # Nodes, in file order.
    nodes = []  # dicts: id, name, lon, lat, ports [(name, vlans, cap, peer)]
    by_zoo_id: dict[str, dict] = {}
    taken: set[str] = set()
    for n in data["nodes"]:
        base = slug(n["name"])
        if not base:
            raise ConvertError(f"node {n['id']!r} name {n['name']!r} gives an empty id")
        nid, k = base, 1
        while nid in taken:
            k += 1
            nid = f"{base}-{k}"
        if nid != base:
            notes.append(f"node name {n['name']!r} clashes; id {nid!r}")
        taken.add(nid)
        zid = str(n["id"])
        if zid in by_zoo_id:
            raise ConvertError(f"source node id {zid!r} appears twice")
        node = {
            "id": nid,
            "name": n["name"],
            "lon": n["lon"],
            "lat": n["lat"],
            "ports": [(p, EDGE_VLANS, EDGE_CAPACITY, None) for p in EDGE_PORTS],
            "trunks": 0,
            "degree": 0,
        }
        nodes.append(node)
        by_zoo_id[zid] = node

    # Links, in file order.
    links = []
    pair_count: dict[frozenset, int] = {}
    for l in data["links"]:
        za, zb = str(l["a"]), str(l["b"])
        if za not in by_zoo_id or zb not in by_zoo_id:
            raise ConvertError(f"link {za}-{zb} names an unknown node")
        a, b = by_zoo_id[za], by_zoo_id[zb]
        if a is b:
            notes.append(f"self-loop on {a['id']!r} skipped")
            continue
        key = frozenset((a["id"], b["id"]))
        pair_count[key] = pair_count.get(key, 0) + 1
        lid = f"{a['id']}--{b['id']}"
        if pair_count[key] > 1:
            lid += f"-{pair_count[key]}"
            notes.append(f"duplicate link between {a['id']!r} and {b['id']!r}: {lid!r}")
        ends = []
        for node in (a, b):
            node["trunks"] += 1
            node["degree"] += 1
            pname = f"et-{node['trunks']}/0/0"
            node["ports"].append((pname, TRUNK_VLANS, capacity, None))
            ends.append(f"{node['id']}:{pname}")
        km = float(l["km"])
        links.append({
            "id": lid, "a": ends[0], "b": ends[1],
            "metric": max(1, round(km)),
        })
    for node in nodes:
        if node["degree"] == 0:
            notes.append(f"node {node['id']!r} has no links (disconnected)")

    # Peer (inter-domain) ports.
    node_by_id = {n["id"]: n for n in nodes}
    peer_count: dict[str, int] = {}
    for text in peers:
        nid, stp = parse_peer(text)
        if nid not in node_by_id:
            raise ConvertError(f"--peer {text!r}: no node {nid!r} (ids: "
                               + ", ".join(sorted(node_by_id)) + ")")
        if stp.split(":")[0] == domain:
            raise ConvertError(f"--peer {text!r}: a peer must be in another domain")
        k = peer_count.get(nid, 0)
        peer_count[nid] = k + 1
        node_by_id[nid]["ports"].append((f"xe-9/0/{k}", PEER_VLANS, PEER_CAPACITY, stp))

    # Emit.
    out = []
    w = out.append
    w(f"# Sluice domain topology {domain!r}: {description}")
    w(f"# {PROVENANCE}.")
    w(f"# Source: {os.path.basename(src)} (topohub network {data.get('name', '?')!r}): "
      f"{len(data['nodes'])} nodes, {len(data['links'])} links.")
    w("# Generated (from the workspace root, stdout redirected to this file) by:")
    w(f"#   {command}")
    w("# Do not edit by hand: change convert.py or its options and regenerate.")
    w("# Port names, VLAN ranges and capacities are assigned by the converter (the source")
    w("# records none); link metric = length in km, at least 1.")
    w("")
    w("[domain]")
    w(f"id = {toml_str(domain)}")
    w(f"description = {toml_str(description)}")
    for node in nodes:
        w("")
        w("[[node]]")
        w(f"id = {toml_str(node['id'])}")
        w(f"name = {toml_str(node['name'])}")
        w(f"location = [{toml_float(node['lon'])}, {toml_float(node['lat'])}]   # [lon, lat]")
        # A border node (it has a peer port) rewrites VLANs at the hand-off, as border
        # routers do: the edge ranges (100-999) and the inter-domain ranges (3000-3099)
        # do not overlap, so a circuit across domains changes VLAN there.
        border = any(peer for _, _, _, peer in node["ports"])
        w(f"vlan_translation = {'true' if border else 'false'}")
        w("ports = [")
        for pname, vlans, cap, peer in node["ports"]:
            extra = f", peer = {toml_str(peer)}" if peer else ""
            w(f"  {{ name = {toml_str(pname)}, vlans = {toml_str(vlans)}, "
              f"capacity_mbps = {cap}{extra} }},")
        w("]")
    for link in links:
        w("")
        w("[[link]]")
        w(f"id = {toml_str(link['id'])}")
        w(f"a = {toml_str(link['a'])}")
        w(f"b = {toml_str(link['b'])}")
        w(f"capacity_mbps = {capacity}")
        w(f"metric = {link['metric']}")
    return "\n".join(out) + "\n", notes


# --------------------------------------------------------------------------- checking

VLANS_RE = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


def check_file(path: str) -> tuple[dict | None, list[str]]:
    """Checks one file. Returns (summary, errors); summary carries what cross-checks need."""
    import tomllib

    errs: list[str] = []
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        return None, [f"{path}: cannot load: {e}"]

    def err(msg):
        errs.append(f"{path}: {msg}")

    unknown = set(doc) - {"domain", "node", "link"}
    if unknown:
        err(f"unknown top-level keys {sorted(unknown)}")
    dom = doc.get("domain", {})
    domain = dom.get("id", "")
    if not isinstance(domain, str) or not ID_RE.fullmatch(domain):
        err(f"domain id {domain!r} does not match [a-z0-9._-]+")
    if not isinstance(dom.get("description", ""), str):
        err("domain description is not a string")

    nodes = doc.get("node", [])
    links = doc.get("link", [])
    if not nodes:
        err("no nodes")
    ports: dict[str, dict[str, dict]] = {}  # node id -> port name -> port table
    n_ports = n_peer = 0
    for i, n in enumerate(nodes):
        nid = n.get("id")
        if not isinstance(nid, str) or not ID_RE.fullmatch(nid):
            err(f"node #{i}: id {nid!r} does not match [a-z0-9._-]+")
            continue
        if nid in ports:
            err(f"node {nid!r} defined twice")
            continue
        if not isinstance(n.get("name", ""), str):
            err(f"node {nid!r}: name is not a string")
        loc = n.get("location")
        if loc is not None and not (
            isinstance(loc, list) and len(loc) == 2
            and all(isinstance(x, (int, float)) for x in loc)
            and -180 <= loc[0] <= 180 and -90 <= loc[1] <= 90
        ):
            err(f"node {nid!r}: location {loc!r} is not [lon, lat]")
        if not isinstance(n.get("vlan_translation", False), bool):
            err(f"node {nid!r}: vlan_translation is not a boolean")
        ports[nid] = {}
        for p in n.get("ports", []):
            pname = p.get("name")
            if not isinstance(pname, str) or not PORT_RE.fullmatch(pname):
                err(f"node {nid!r}: port name {pname!r} does not match [a-z0-9._/-]+")
                continue
            if pname in ports[nid]:
                err(f"node {nid!r}: port {pname!r} defined twice")
                continue
            ports[nid][pname] = p
            n_ports += 1
            if not isinstance(p.get("vlans"), str) or not VLANS_RE.fullmatch(p["vlans"]):
                err(f"port {nid}:{pname}: bad vlans {p.get('vlans')!r}")
            else:
                for r in p["vlans"].split(","):
                    lo, _, hi = r.partition("-")
                    lo, hi = int(lo), int(hi or lo)
                    if not 1 <= lo <= hi <= 4094:
                        err(f"port {nid}:{pname}: VLAN range {r!r} outside 1-4094")
            cap = p.get("capacity_mbps")
            if not isinstance(cap, int) or isinstance(cap, bool) or cap <= 0:
                err(f"port {nid}:{pname}: capacity_mbps {cap!r} is not a positive integer")
            peer = p.get("peer")
            if peer is not None:
                n_peer += 1
                parts = peer.split(":") if isinstance(peer, str) else []
                if (len(parts) != 3 or not ID_RE.fullmatch(parts[0])
                        or not ID_RE.fullmatch(parts[1]) or not PORT_RE.fullmatch(parts[2])):
                    err(f"port {nid}:{pname}: peer {peer!r} is not domain:node:port")
                elif parts[0] == domain:
                    err(f"port {nid}:{pname}: peer {peer!r} is in this domain")

    used: dict[tuple[str, str], str] = {}
    link_ids: set[str] = set()
    for i, l in enumerate(links):
        lid = l.get("id")
        if not isinstance(lid, str) or not ID_RE.fullmatch(lid):
            err(f"link #{i}: id {lid!r} does not match [a-z0-9._-]+")
            lid = f"#{i}"
        elif lid in link_ids:
            err(f"link {lid!r} defined twice")
        link_ids.add(lid)
        cap = l.get("capacity_mbps")
        if not isinstance(cap, int) or isinstance(cap, bool) or cap <= 0:
            err(f"link {lid}: capacity_mbps {cap!r} is not a positive integer")
            cap = None
        cap_ba = l.get("capacity_ba_mbps", cap)
        if cap_ba is not None and (not isinstance(cap_ba, int) or cap_ba <= 0):
            err(f"link {lid}: capacity_ba_mbps {cap_ba!r} is not a positive integer")
        metric = l.get("metric")
        if not isinstance(metric, int) or isinstance(metric, bool) or metric < 1:
            err(f"link {lid}: metric {metric!r} is not an integer >= 1")
        end_nodes = []
        for end in ("a", "b"):
            ref = l.get(end)
            node, sep, pname = ref.partition(":") if isinstance(ref, str) else ("", "", "")
            if not sep:
                err(f"link {lid}: {end} = {ref!r} is not node:port")
                continue
            end_nodes.append(node)
            if node not in ports:
                err(f"link {lid}: {end} names unknown node {node!r}")
                continue
            port = ports[node].get(pname)
            if port is None:
                err(f"link {lid}: {end} names unknown port {node}:{pname}")
                continue
            if (node, pname) in used:
                err(f"link {lid}: port {node}:{pname} already used by link {used[(node, pname)]!r}")
            used[(node, pname)] = lid
            if "peer" in port:
                err(f"link {lid}: port {node}:{pname} faces a peer domain")
            pcap = port.get("capacity_mbps")
            if cap is not None and isinstance(pcap, int) and pcap < max(cap, cap_ba or 0):
                err(f"link {lid}: port {node}:{pname} ({pcap} Mb/s) is slower than the link")
        if len(end_nodes) == 2 and end_nodes[0] == end_nodes[1]:
            err(f"link {lid}: both ends on node {end_nodes[0]!r}")

    # Connectivity (a note, not an error).
    adj = {nid: set() for nid in ports}
    for l in links:
        a = str(l.get("a", "")).partition(":")[0]
        b = str(l.get("b", "")).partition(":")[0]
        if a in adj and b in adj:
            adj[a].add(b)
            adj[b].add(a)
    components = 0
    seen: set[str] = set()
    for start in adj:
        if start in seen:
            continue
        components += 1
        stack = [start]
        seen.add(start)
        while stack:
            for y in adj[stack.pop()]:
                if y not in seen:
                    seen.add(y)
                    stack.append(y)

    edge = sum(1 for nid, ps in ports.items() for pn, p in ps.items()
               if (nid, pn) not in used and "peer" not in p)
    print(f"{path}: domain {domain!r}: {len(ports)} nodes, {len(links)} links, "
          f"{n_ports} ports ({len(used)} on links, {edge} client edge, {n_peer} peer), "
          f"{components} connected component{'s' if components != 1 else ''}"
          f" -- {'OK' if not errs else f'{len(errs)} error(s)'}")
    return {"path": path, "domain": domain, "ports": ports}, errs


def cross_check(summaries: list[dict]) -> list[str]:
    errs = []
    by_domain = {s["domain"]: s for s in summaries}
    pairs = 0
    for s in summaries:
        for nid, ps in s["ports"].items():
            for pname, p in ps.items():
                peer = p.get("peer")
                if not isinstance(peer, str) or peer.count(":") != 2:
                    continue
                here = f"{s['domain']}:{nid}:{pname}"
                pd, pn, pp = peer.split(":")
                other = by_domain.get(pd)
                if other is None:
                    print(f"note: {here}: peer {peer!r} not verified "
                          f"(domain {pd!r} is not among the files checked)")
                    continue
                port = other["ports"].get(pn, {}).get(pp)
                if port is None:
                    errs.append(f"{here}: peer {peer!r} does not exist in {other['path']}")
                elif port.get("peer") != here:
                    errs.append(f"{here}: peer {peer!r} points back to {port.get('peer')!r}, not here")
                else:
                    pairs += 1
                    if here < peer:
                        print(f"demarcation: {here} <-> {peer}")
    print(f"cross-check: {pairs // 2} demarcation pair(s) consistent across "
          f"{len(summaries)} file(s)" + (f", {len(errs)} error(s)" if errs else ""))
    return errs


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        description="Convert a topohub/Topology Zoo JSON network into a Sluice topology "
                    "TOML (stdout), or --check generated files.")
    ap.add_argument("src", nargs="?", help="source JSON file")
    ap.add_argument("--domain", help="domain id, e.g. internet2")
    ap.add_argument("--description", help="one-line description of the domain")
    ap.add_argument("--capacity-mbps", type=int, default=100000,
                    help="capacity of every internal link (default 100000)")
    ap.add_argument("--peer", action="append", default=[],
                    metavar="NODE=PEER_DOMAIN:PEER_NODE:PEER_PORT",
                    help="add an inter-domain port xe-9/0/K on NODE (repeatable)")
    ap.add_argument("--check", nargs="+", metavar="FILE.toml",
                    help="check topology files (and their peers against each other)")
    args = ap.parse_args(argv)

    if args.check:
        if args.src:
            ap.error("--check takes only topology files")
        summaries, errs = [], []
        for path in args.check:
            s, e = check_file(path)
            errs += e
            if s:
                summaries.append(s)
        errs += cross_check(summaries)
        for e in errs:
            print(f"error: {e}", file=sys.stderr)
        return 1 if errs else 0

    if not (args.src and args.domain and args.description is not None):
        ap.error("SRC, --domain and --description are required")
    command = " ".join(["python3", "topologies/convert.py"] + [shell_quote(a) for a in argv])
    try:
        text, notes = convert(args.src, args.domain, args.description,
                              args.capacity_mbps, args.peer, command)
    except (ConvertError, OSError, KeyError, ValueError) as e:
        print(f"convert.py: error: {e}", file=sys.stderr)
        return 1
    for n in notes:
        print(f"convert.py: note: {n}", file=sys.stderr)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
