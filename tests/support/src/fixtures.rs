//! Small OVN topologies built by hand (`ovn-nbctl`) that several tests and benchmarks
//! start from: a router with two switches, and pods plugged into them.

use crate::sandbox::{Pod, PodSpec, Sandbox};

/// Router `r1` with switch `a` (10.0.1.0/24) and switch `b` (10.0.2.0/24).
pub fn router_with_two_switches(sb: &Sandbox) {
    sb.nbctl(&[
        "lr-add",
        "r1",
        "--",
        "lrp-add",
        "r1",
        "r1-a",
        "00:00:00:00:01:01",
        "10.0.1.1/24",
        "--",
        "lrp-add",
        "r1",
        "r1-b",
        "00:00:00:00:02:01",
        "10.0.2.1/24",
    ])
    .expect("router r1");
    for (ls, lrp) in [("a", "r1-a"), ("b", "r1-b")] {
        let lsp = format!("{ls}-r1");
        let opt = format!("router-port={lrp}");
        sb.nbctl(&[
            "ls-add",
            ls,
            "--",
            "lsp-add",
            ls,
            &lsp,
            "--",
            "lsp-set-type",
            &lsp,
            "router",
            "--",
            "lsp-set-addresses",
            &lsp,
            "router",
            "--",
            "lsp-set-options",
            &lsp,
            &opt,
        ])
        .unwrap_or_else(|e| panic!("switch {ls}: {e}"));
    }
}

/// Plugs pod `name` into `switch` with one address; panics naming it on failure.
pub fn pod(sb: &Sandbox, name: &str, switch: &str, mac: &str, address: &str, gateway: &str) -> Pod {
    sb.add_pod(&PodSpec {
        name,
        switch,
        mac,
        address,
        gateway,
        mtu: None,
    })
    .unwrap_or_else(|e| panic!("pod {name}: {e}"))
}
