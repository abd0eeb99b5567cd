//! The offload checker on real dumps: every fixture under `fixtures/offload/` was captured
//! from a sandbox (OVN 23.03.1, OVS 3.1.0, userspace datapath) with `ovs-appctl
//! dpctl/dump-flows -m` and `ovs-ofctl -O OpenFlow15 dump-groups br-int` right after HTTP
//! requests from a client pod to an OVN load balancer VIP (10.96.0.100:80, backends
//! 10.0.0.11:8080 and 10.0.0.12:8080, a router between client and VIP):
//! - `default-*`: the LB as OVN makes it (select group with `selection_method=dp_hash`);
//! - `selfields-*`: the same LB with `selection_fields="ip_src,ip_dst,tp_src,tp_dst"`;
//! - `userspace-*`: plus a request to 10.0.2.77, which the router must ARP for first
//!   (`userspace(…controller…)`); `-plain` is the same without `-m`;
//! - `checkpktlen-*`: the router made a gateway router with `gateway_mtu=1400` on its ports;
//! - `trunc-*`: an OVS mirror with `snaplen=128` on the client's port.

use std::path::PathBuf;

use ycloud_controller::offload::dpflow::parse_dump;
use ycloud_controller::offload::groups::parse_groups;
use ycloud_controller::offload::path::Role;
use ycloud_controller::offload::{Report, SavedDumps, Scope, check};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/offload")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn report(flows: &str, groups: &str, scope: Scope) -> Report {
    check(
        &SavedDumps {
            name: flows.into(),
            flows: fixture(flows),
            groups: fixture(groups),
        },
        scope,
    )
    .expect("fixtures parse")
}

fn not_eligible_rules(r: &Report) -> Vec<&str> {
    let mut ids: Vec<&str> = r
        .flows
        .iter()
        .filter(|f| f.judged && !f.eligible)
        .flat_map(|f| f.reasons.iter().map(|x| x.rule))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn every_line_of_every_real_dump_parses() {
    for name in [
        "default-dpflows.txt",
        "selfields-dpflows.txt",
        "userspace-dpflows.txt",
        "userspace-dpflows-plain.txt",
        "checkpktlen-dpflows.txt",
        "trunc-dpflows.txt",
    ] {
        let text = fixture(name);
        let flows = parse_dump(&text, name).unwrap_or_else(|e| panic!("{e}"));
        let lines = text.lines().filter(|l| !l.starts_with("flow-dump")).count();
        assert_eq!(flows.len(), lines, "{name}: one flow per line");
        for f in &flows {
            assert!(!f.matches.is_empty(), "{name}:{}: no match parsed", f.line);
            assert!(!f.actions.is_empty(), "{name}:{}: no action parsed", f.line);
            assert_eq!(f.dp.as_deref().unwrap_or("ovs"), "ovs");
        }
    }
    for name in ["default-groups.txt", "selfields-groups.txt"] {
        let groups = parse_groups(&fixture(name), name).unwrap();
        assert_eq!(groups.len(), 1, "{name}");
        assert_eq!(groups[0].buckets, 2);
        assert_eq!(
            groups[0].backends,
            vec!["10.0.0.11:8080".to_owned(), "10.0.0.12:8080".to_owned()]
        );
    }
}

#[test]
fn the_default_dp_hash_load_balancer_is_not_offloadable_because_of_hash_and_dp_hash() {
    let r = report(
        "default-dpflows.txt",
        "default-groups.txt",
        Scope::ServicePath,
    );
    assert!(!r.summary.ok, "{}", r.render(true));
    assert_eq!(not_eligible_rules(&r), ["action-hash", "match-dp-hash"]);
    // exactly the selection flow and its buckets fail; the rest of the path is eligible
    let select: Vec<_> = r
        .flows
        .iter()
        .filter(|f| f.role == Some(Role::Select))
        .collect();
    assert_eq!(select.len(), 1);
    assert!(select[0].actions.starts_with("hash(l4(0)),recirc("));
    let buckets: Vec<_> = r
        .flows
        .iter()
        .filter(|f| f.role == Some(Role::Bucket))
        .collect();
    assert!(buckets.len() >= 2, "{}", r.render(true));
    assert!(
        buckets
            .iter()
            .all(|f| !f.eligible && f.actions.contains("nat(dst=10.0.0.1"))
    );
    assert!(
        r.flows
            .iter()
            .filter(|f| f.judged && !f.eligible)
            .all(|f| matches!(f.role, Some(Role::Select | Role::Bucket)))
    );
    assert_eq!(r.summary.dp_hash_groups, [1]);
    assert!(r.groups[0].forces_dp_hash);
    assert!(r.summary_line().ends_with("NOT OFFLOADABLE"));
}

#[test]
fn with_selection_fields_every_service_path_flow_is_eligible() {
    let r = report(
        "selfields-dpflows.txt",
        "selfields-groups.txt",
        Scope::ServicePath,
    );
    assert!(r.summary.ok, "{}", r.render(true));
    assert_eq!(r.summary.judged, r.summary.flows);
    assert_eq!(r.summary.judged_not_eligible, 0);
    // new connections (the DNAT with commit) and established ones (backend replies) are in
    let dnat = r
        .flows
        .iter()
        .filter(|f| f.role == Some(Role::Dnat))
        .count();
    let reply = r
        .flows
        .iter()
        .filter(|f| f.role == Some(Role::Reply))
        .count();
    assert!(dnat >= 2 && reply >= 2, "{}", r.render(true));
    assert!(r.summary.dp_hash_groups.is_empty());
    assert_eq!(
        r.groups[0].group.fields,
        ["ip_src", "ip_dst", "tcp_src", "tcp_dst"]
    );
    // what tc needs from the system is still reported with the eligible flows
    for c in [
        "needs-ct-probe",
        "needs-recirc-sharing",
        "needs-ct-inv-rpl-probe",
    ] {
        assert!(r.summary.conditions.contains_key(c), "{c}: {:?}", r.summary);
    }
}

#[test]
fn a_controller_action_makes_its_flow_not_eligible_but_keeps_it_off_the_service_path() {
    let r = report(
        "userspace-dpflows.txt",
        "selfields-groups.txt",
        Scope::ServicePath,
    );
    // the request to 10.0.2.77 is not service traffic: listed, not judged
    assert!(r.summary.ok, "{}", r.render(true));
    assert_eq!(r.summary.other_not_eligible, 1);
    let all = report("userspace-dpflows.txt", "selfields-groups.txt", Scope::All);
    assert!(!all.summary.ok);
    assert_eq!(not_eligible_rules(&all), ["action-userspace"]);
    // the plain (no -m) dump of the same moment gives the same verdicts
    let plain = report(
        "userspace-dpflows-plain.txt",
        "selfields-groups.txt",
        Scope::All,
    );
    assert_eq!(not_eligible_rules(&plain), ["action-userspace"]);
    assert_eq!(plain.summary.judged_not_eligible, 1);
}

#[test]
fn check_pkt_len_with_a_controller_branch_makes_the_service_path_not_eligible() {
    let r = report(
        "checkpktlen-dpflows.txt",
        "selfields-groups.txt",
        Scope::ServicePath,
    );
    assert!(!r.summary.ok, "{}", r.render(true));
    assert_eq!(
        not_eligible_rules(&r),
        ["action-check-pkt-len-branch", "action-userspace"]
    );
    assert!(
        r.flows
            .iter()
            .filter(|f| f.judged && !f.eligible)
            .all(|f| f.actions.contains("check_pkt_len(size=1414,gt(userspace("))
    );
}

#[test]
fn a_mirror_with_snaplen_makes_the_flow_not_eligible_with_trunc() {
    let r = report(
        "trunc-dpflows.txt",
        "selfields-groups.txt",
        Scope::ServicePath,
    );
    assert!(!r.summary.ok);
    assert_eq!(not_eligible_rules(&r), ["action-trunc"]);
    let bad: Vec<_> = r.flows.iter().filter(|f| !f.eligible).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].reasons[0].detail, "trunc(128)");
    assert!(bad[0].reasons[0].source.contains("3.1:2149-2153"));
}

#[test]
fn the_json_report_carries_verdicts_reasons_and_sources() {
    let r = report(
        "default-dpflows.txt",
        "default-groups.txt",
        Scope::ServicePath,
    );
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["summary"]["ok"], false);
    assert_eq!(v["groups"][0]["selection_method"], "dp_hash");
    assert_eq!(v["groups"][0]["forces_dp_hash"], true);
    let bad = v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "select")
        .unwrap();
    assert_eq!(bad["eligible"], false);
    assert_eq!(bad["reasons"][0]["rule"], "action-hash");
    assert!(
        bad["reasons"][0]["source"]
            .as_str()
            .unwrap()
            .contains("ovs-tc-offload.md")
    );
}
