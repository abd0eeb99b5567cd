//! Driving real NB and SB `ovsdb-server`s by hand, as OVN's own daemons would: `ovn-nbctl`
//! for NB, `ovsdb-client transact` for the SB rows ovn-controller and northd write (chassis,
//! `cr-` port bindings, claims). Shared by the tests that run the controller against NB+SB
//! without any OVN daemon.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use ycloud_testsupport::ovsdb_server::OvsdbServer;

/// `ovn-nbctl` against `nb`; its trimmed stdout (a failure panics with its stderr).
pub fn nbctl(nb: &OvsdbServer, args: &[&str]) -> String {
    let out = Command::new("ovn-nbctl")
        .arg(format!("--db={}", nb.unix_remote()))
        .args(["--no-leader-only", "--timeout=10"])
        .args(args)
        .output()
        .expect("run ovn-nbctl");
    assert!(
        out.status.success(),
        "ovn-nbctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One SB transaction with `ovsdb-client` (the ops as JSON); the reply's first result.
pub fn sb_transact(sb: &OvsdbServer, ops: serde_json::Value) -> serde_json::Value {
    let mut txn = vec![json!("OVN_Southbound")];
    txn.extend(ops.as_array().expect("ops").iter().cloned());
    let out = sb
        .ovsdb_client(&["transact", &serde_json::Value::Array(txn).to_string()])
        .expect("ovsdb-client transact");
    let reply: serde_json::Value = serde_json::from_str(&out).expect("reply JSON");
    for r in reply.as_array().expect("results") {
        assert!(r.get("error").is_none(), "SB transaction failed: {out}");
    }
    reply[0].clone()
}

/// Adds a `Chassis` row with its tunnel endpoint `ip` (as ovn-controller registers
/// itself); its uuid.
pub fn add_chassis(sb: &OvsdbServer, name: &str, ip: &str) -> String {
    let r = sb_transact(
        sb,
        json!([
            {"op": "insert", "table": "Chassis",
             "row": {"name": name, "hostname": name,
                     "encaps": ["named-uuid", "encap"]}},
            {"op": "insert", "table": "Encap", "uuid-name": "encap",
             "row": {"type": "geneve", "ip": ip, "chassis_name": name}},
        ]),
    );
    r["uuid"][1].as_str().expect("uuid").to_owned()
}

/// The `cr-` port binding `port` as northd makes it (with a datapath of its own); its uuid.
pub fn add_cr_binding(sb: &OvsdbServer, port: &str) -> String {
    let r = sb_transact(
        sb,
        json!([
            {"op": "insert", "table": "Port_Binding", "uuid-name": "pb",
             "row": {"logical_port": port, "type": "chassisredirect",
                     "tunnel_key": 2, "datapath": ["named-uuid", "dp"]}},
            {"op": "insert", "table": "Datapath_Binding", "uuid-name": "dp",
             "row": {"tunnel_key": 7}},
        ]),
    );
    r["uuid"][1].as_str().expect("uuid").to_owned()
}

/// What ovn-controller writes when its chassis claims (`Some`) or releases the port; a
/// claim by another chassis replaces the old holder in the same moment (a failover).
pub fn claim(sb: &OvsdbServer, pb: &str, chassis: Option<&str>) {
    let value = match chassis {
        Some(c) => json!(["uuid", c]),
        None => json!(["set", []]),
    };
    sb_transact(
        sb,
        json!([{"op": "update", "table": "Port_Binding",
                "where": [["_uuid", "==", ["uuid", pb]]], "row": {"chassis": value}}]),
    );
}

/// Polls `ok` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
