//! Keeps the dependency rules of ARCHITECTURE.md: the pure crates know no I/O runtime,
//! RPC or database crates; only the edge crates know tonic; only idc knows diesel.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Every crate each workspace member depends on, directly or not (normal dependencies).
fn closure() -> BTreeMap<String, BTreeSet<String>> {
    // This host's packages only: offline, the lock's packages for other platforms (say,
    // Windows crates of a dependency's dependency) need not be downloaded.
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc names its host");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes = meta["resolve"]["nodes"].as_array().unwrap();
    let deps: BTreeMap<&str, Vec<&str>> = nodes
        .iter()
        .map(|n| {
            let normal = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (n["id"].as_str().unwrap(), normal)
        })
        .collect();
    let mut result = BTreeMap::new();
    for member in meta["workspace_members"].as_array().unwrap() {
        let member = member.as_str().unwrap();
        let mut seen = BTreeSet::new();
        let mut stack = vec![member];
        while let Some(id) = stack.pop() {
            for d in deps.get(id).into_iter().flatten() {
                if seen.insert(names[d].to_string()) {
                    stack.push(d);
                }
            }
        }
        result.insert(names[member].to_string(), seen);
    }
    result
}

#[test]
fn pure_crates_stay_pure_and_sql_and_rpc_stay_at_the_edge() {
    let all = closure();
    let forbidden_in_pure = [
        "tokio",
        "tonic",
        "diesel",
        "hyper",
        "prost",
        "libsqlite3-sys",
        "mio",
    ];
    for pure in [
        "sluice-model",
        "sluice-pce",
        "sluice-scheduler",
        "sluice-stitching",
    ] {
        let deps = &all[pure];
        for f in forbidden_in_pure {
            assert!(
                !deps.contains(f),
                "{pure} must not depend on {f} (directly or not)"
            );
        }
    }
    for no_sql in [
        "sluice-model",
        "sluice-pce",
        "sluice-scheduler",
        "sluice-stitching",
        "sluice-proto",
    ] {
        assert!(
            !all[no_sql].contains("diesel"),
            "only sluice-idc may know SQL; {no_sql} pulls diesel"
        );
    }
    assert!(all["sluice-idc"].contains("diesel"));
    assert!(all["sluice-proto"].contains("tonic"));
    // One rustls crypto provider (ring) when TLS arrives: aws-lc-rs beside it panics.
    for (name, deps) in &all {
        assert!(!deps.contains("aws-lc-rs"), "{name} pulls aws-lc-rs");
    }
}
