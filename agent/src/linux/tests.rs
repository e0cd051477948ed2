use super::*;
use crate::config::PortConfig;
use sluice_model::dataplane::NodeCircuit;

fn cfg() -> AgentConfig {
    let port = |name: &str, dev: &str, n: u8| PortConfig {
        name: name.into(),
        dev: dev.into(),
        capacity: Mbps(1000),
        local: Ipv4Addr::new(10, n, 0, 1),
        remote: Ipv4Addr::new(10, n, 0, 2),
        vxlan_port: crate::linux::VXLAN_PORT,
    };
    AgentConfig {
        node: "r1".into(),
        netns: None,
        ports: vec![
            port("xe-0", "p-ha", 1),
            port("xe-1", "p-r2", 2),
            port("xe-2", "p-r3", 3),
        ],
    }
}

fn circuit(id: &str, a: (&str, u32), z: (&str, u32), az: u64, za: u64) -> NodeCircuit {
    NodeCircuit::new(id, a, z, Mbps(az), Mbps(za))
}

fn desired(cs: Vec<NodeCircuit>) -> Desired {
    Desired {
        version: 1,
        circuits: cs,
    }
}

/// Plays our own command lines on a model of the node, as the kernel would.
fn apply(cur: &mut Current, plan: &Plan, cfg: &AgentConfig) {
    let dev_of = |w: &[&str]| w[w.iter().position(|x| *x == "dev").unwrap() + 1].to_string();
    let minor_of = |s: &str| u16::from_str_radix(s.strip_prefix("1:").unwrap(), 16).unwrap();
    for line in plan.tc_remove.iter().chain(&plan.ip).chain(&plan.tc_add) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let after = |k: &str| w[w.iter().position(|x| *x == k).unwrap() + 1];
        match (w[0], w[1]) {
            ("qdisc", "replace") => {
                cur.ports.insert(
                    dev_of(&w),
                    PortQueues {
                        htb_root: true,
                        ..PortQueues::default()
                    },
                );
            }
            ("class", "replace") => {
                let q = cur.ports.get_mut(&dev_of(&w)).expect("a qdisc first");
                assert!(q.htb_root);
                q.classes.insert(
                    minor_of(after("classid")),
                    Class {
                        rate_bps: parse_rate(after("rate")).unwrap(),
                        ceil_bps: parse_rate(after("ceil")).unwrap(),
                        prio: after("prio").parse().unwrap(),
                        ..Class::default()
                    },
                );
            }
            ("class", "del") => {
                let q = cur.ports.get_mut(&dev_of(&w)).unwrap();
                let m = minor_of(after("classid"));
                let pref_pointing = q
                    .filters
                    .iter()
                    .any(|f| u16::try_from(*f).ok() == m.checked_sub(CIRCUIT_CLASS_BASE));
                assert!(!pref_pointing, "a class is removed only after its filter");
                assert!(q.classes.remove(&m).is_some(), "{line}");
            }
            ("filter", "add") => {
                let q = cur.ports.get_mut(&dev_of(&w)).unwrap();
                let flow = minor_of(after("flowid"));
                assert!(
                    q.classes.contains_key(&flow),
                    "a filter goes to an existing class: {line}"
                );
                assert!(q.filters.insert(after("prio").parse().unwrap()), "{line}");
            }
            ("filter", "del") => {
                let q = cur.ports.get_mut(&dev_of(&w)).unwrap();
                assert!(q.filters.remove(&after("prio").parse().unwrap()), "{line}");
            }
            ("link", "add") if w.contains(&"bridge") => {
                assert!(
                    cur.links
                        .insert(
                            w[2].into(),
                            Link {
                                kind: LinkKind::Bridge,
                                master: None,
                                up: false
                            }
                        )
                        .is_none()
                );
            }
            ("link", "add") => {
                let dev = after("dev").to_string();
                assert!(cfg.ports.iter().any(|p| p.dev == dev));
                let l = Link {
                    kind: LinkKind::Vxlan {
                        vni: after("id").parse().unwrap(),
                        local: after("local").parse().ok(),
                        remote: after("remote").parse().ok(),
                        dev: Some(dev),
                        port: after("dstport").parse().unwrap(),
                    },
                    master: None,
                    up: false,
                };
                assert!(cur.links.insert(w[2].into(), l).is_none());
            }
            ("link", "set") => {
                let master = w
                    .iter()
                    .position(|x| *x == "master")
                    .map(|i| w[i + 1].to_string());
                if let Some(m) = &master {
                    assert!(cur.links.contains_key(m), "the bridge exists first: {line}");
                }
                let l = cur.links.get_mut(w[2]).unwrap();
                if master.is_some() {
                    l.master = master;
                }
                l.up = true;
            }
            ("link", "del") => {
                let name = w[2].to_string();
                cur.links.remove(&name);
                for l in cur.links.values_mut() {
                    if l.master.as_deref() == Some(name.as_str()) {
                        l.master = None;
                    }
                }
            }
            _ => panic!("unexpected command {line}"),
        }
    }
}

#[test]
fn an_empty_node_gets_queues_bridges_and_labels_in_order() {
    let cfg = cfg();
    let d = desired(vec![circuit("c1", ("xe-0", 150), ("xe-1", 3001), 200, 100)]);
    let p = plan(&cfg, &d, &Current::default()).unwrap();
    assert!(p.tc_remove.is_empty());
    assert_eq!(
        p.ip,
        [
            "link add xc0.150 type bridge",
            "link set xc0.150 up",
            "link add vx0.150 type vxlan id 150 local 10.1.0.1 remote 10.1.0.2 dev p-ha dstport 4789 nolearning",
            "link set vx0.150 master xc0.150 up",
            "link add vx1.3001 type vxlan id 3001 local 10.2.0.1 remote 10.2.0.2 dev p-r2 dstport 4789 nolearning",
            "link set vx1.3001 master xc0.150 up",
        ]
    );
    // A→Z (200) leaves through xe-1 (p-r2), Z→A (100) through xe-0 (p-ha), each at its
    // rate on the wire (full-size VXLAN frames); best effort gets what is left.
    assert_eq!(
        (wire_kbit(Mbps(200)), wire_kbit(Mbps(100))),
        (208_828, 104_414)
    );
    let p_r2: Vec<&String> = p.tc_add.iter().filter(|l| l.contains("dev p-r2")).collect();
    assert_eq!(
        p_r2,
        [
            "qdisc replace dev p-r2 root handle 1: htb default fffe",
            "class replace dev p-r2 parent 1: classid 1:1 htb rate 1000000kbit ceil 1000000kbit prio 0 quantum 1514",
            "class replace dev p-r2 parent 1:1 classid 1:1bb9 htb rate 208828kbit ceil 208828kbit prio 0 quantum 1514",
            "class replace dev p-r2 parent 1:1 classid 1:fffe htb rate 791172kbit ceil 1000000kbit prio 7 quantum 1514",
            "filter add dev p-r2 parent 1: protocol ip prio 3001 u32 match ip protocol 17 0xff match ip dport 4789 0xffff match u32 0x000bb900 0xffffff00 at 32 flowid 1:1bb9",
        ]
    );
    assert!(
        p.tc_add
            .iter()
            .any(|l| l.contains("dev p-ha") && l.contains("classid 1:1096 htb rate 104414kbit"))
    );
    // The third port has only its queues.
    assert_eq!(
        p.tc_add.iter().filter(|l| l.contains("dev p-r3")).count(),
        3
    );
}

#[test]
fn applying_twice_changes_nothing_and_a_change_touches_only_what_changed() {
    let cfg = cfg();
    let mut cur = Current::default();
    // Not ours: left alone whatever happens.
    cur.links.insert(
        "eth0".into(),
        Link {
            kind: LinkKind::Other,
            master: None,
            up: true,
        },
    );
    let first = desired(vec![
        circuit("c1", ("xe-0", 150), ("xe-1", 3001), 200, 200),
        circuit("c2", ("xe-0", 151), ("xe-2", 3002), 300, 0),
    ]);
    let p = plan(&cfg, &first, &cur).unwrap();
    apply(&mut cur, &p, &cfg);
    assert!(
        plan(&cfg, &first, &cur).unwrap().is_empty(),
        "applied: nothing left to do"
    );

    // c2 goes, c1 gets 250 A→Z, c3 comes.
    let second = desired(vec![
        circuit("c1", ("xe-0", 150), ("xe-1", 3001), 250, 200),
        circuit("c3", ("xe-2", 160), ("xe-1", 3003), 100, 100),
    ]);
    let p = plan(&cfg, &second, &cur).unwrap();
    // Nothing of c1's links is touched; only its class on p-r2 changes.
    assert!(
        p.ip.iter()
            .all(|l| !l.contains("150") && !l.contains("3001")),
        "{:?}",
        p.ip
    );
    assert!(p.ip.contains(&"link del xc0.151".to_string()));
    assert!(p.ip.contains(&"link del vx0.151".to_string()));
    assert!(
        p.tc_remove
            .contains(&"filter del dev p-r3 parent 1: prio 3002".to_string())
    );
    assert!(
        p.tc_add
            .iter()
            .any(|l| l.contains("dev p-r2") && l.contains("classid 1:1bb9 htb rate 261035kbit"))
    );
    apply(&mut cur, &p, &cfg);
    assert!(plan(&cfg, &second, &cur).unwrap().is_empty());
    assert!(cur.links.contains_key("eth0"));

    // Nothing wanted: everything of ours goes, the queues stay (best effort at line rate).
    let p = plan(&cfg, &desired(vec![]), &cur).unwrap();
    apply(&mut cur, &p, &cfg);
    assert_eq!(cur.links.keys().collect::<Vec<_>>(), ["eth0"]);
    for q in cur.ports.values() {
        assert!(q.filters.is_empty());
        assert_eq!(
            q.classes.keys().copied().collect::<Vec<_>>(),
            [1, BEST_EFFORT]
        );
        assert_eq!(q.classes[&BEST_EFFORT].rate_bps, 1_000_000_000);
    }
}

#[test]
fn what_cannot_be_carried_is_refused_whole() {
    let cfg = cfg();
    let e = |cs| plan(&cfg, &desired(cs), &Current::default()).unwrap_err();
    assert!(matches!(
        e(vec![circuit("c", ("xe-9", 1), ("xe-1", 1), 1, 1)]),
        PlanError::UnknownPort { .. }
    ));
    assert!(matches!(
        e(vec![circuit("c", ("xe-0", 0), ("xe-1", 1), 1, 1)]),
        PlanError::BadLabel { .. }
    ));
    assert!(matches!(
        e(vec![circuit("c", ("xe-0", 4095), ("xe-1", 1), 1, 1)]),
        PlanError::BadLabel { .. }
    ));
    assert!(matches!(
        e(vec![
            circuit("c", ("xe-0", 10), ("xe-1", 20), 1, 1),
            circuit("d", ("xe-2", 30), ("xe-1", 20), 1, 1),
        ]),
        PlanError::LabelTaken { .. }
    ));
    assert!(matches!(
        e(vec![
            circuit("c", ("xe-0", 10), ("xe-1", 20), 600, 1),
            circuit("d", ("xe-2", 30), ("xe-1", 21), 500, 1),
        ]),
        PlanError::OverCapacity { reserved: 1100, .. }
    ));
}

#[test]
fn reads_what_ip_and_tc_print() {
    let links = parse_links(r#"[
        {"ifname":"lo","flags":["LOOPBACK","UP"]},
        {"ifname":"pa","flags":["BROADCAST","UP","LOWER_UP"],"linkinfo":{"info_kind":"veth"}},
        {"ifname":"vx0.150","flags":["BROADCAST","UP"],"master":"xc0.150","linkinfo":{"info_kind":"vxlan","info_data":{"id":150,"remote":"10.9.0.2","local":"10.9.0.1","link":"pa","port":4789}}},
        {"ifname":"xc0.150","flags":["BROADCAST"],"linkinfo":{"info_kind":"bridge","info_data":{}}}
    ]"#).unwrap();
    assert_eq!(
        links["vx0.150"],
        Link {
            kind: LinkKind::Vxlan {
                vni: 150,
                local: Some(Ipv4Addr::new(10, 9, 0, 1)),
                remote: Some(Ipv4Addr::new(10, 9, 0, 2)),
                dev: Some("pa".into()),
                port: 4789,
            },
            master: Some("xc0.150".into()),
            up: true,
        }
    );
    assert!(!links["xc0.150"].up);
    assert_eq!(links["pa"].kind, LinkKind::Other);
    assert!(
        parse_htb_root(
            r#"[{"kind":"htb","handle":"1:","root":true,"options":{"default":"0xfffe"}}]"#
        )
        .unwrap()
    );
    assert!(!parse_htb_root(r#"[{"kind":"noqueue","handle":"0:","root":true}]"#).unwrap());
    let filters = parse_filters(r#"[{"parent":"1:","protocol":"ip","pref":150,"kind":"u32","chain":0},{"parent":"1:","protocol":"ip","pref":150,"kind":"u32","chain":0,"options":{"fh":"800::800","flowid":"1:1096"}}]"#).unwrap();
    assert_eq!(filters.into_iter().collect::<Vec<_>>(), [150]);
    let classes = parse_classes(
        "class htb 1:1 root rate 1Gbit ceil 1Gbit burst 1375b cburst 1375b \n Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) \n backlog 0b 0p requeues 0\n\
         class htb 1:1096 parent 1:1 prio 0 rate 200Mbit ceil 200Mbit burst 1600b cburst 1600b \n Sent 123456 bytes 89 pkt (dropped 7, overlimits 3 requeues 0) \n",
    );
    assert_eq!(classes[&1].rate_bps, 1_000_000_000);
    let c = classes[&0x1096];
    assert_eq!(
        (c.rate_bps, c.ceil_bps, c.prio),
        (200_000_000, 200_000_000, 0)
    );
    assert_eq!((c.bytes, c.packets, c.drops), (123_456, 89, 7));
    assert_eq!(parse_rate("1500Kbit"), Some(1_500_000));
    assert_eq!(parse_rate("12bit"), Some(12));
    assert_eq!(parse_rate("fast"), None);
}
