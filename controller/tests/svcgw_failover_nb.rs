//! The service gateway follows OVN's election, against real OVN_Northbound and
//! OVN_Southbound ovsdb-servers and the controller binary with `--ovn-sb`: the beacon's
//! rows reach NB with the `--svcgw-chassis` priorities, and when SB says another chassis
//! holds the beacon's `cr-` port the controller re-pins `yc-svcgw` there. No northd runs:
//! the test writes the SB rows OVN would (a `Chassis` per node, the `chassisredirect`
//! `Port_Binding` and its `chassis`), which is the election as ovn-controller records it.
//! Without `--ovn-sb` the gateway stays pinned and no beacon is made.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

#[path = "support/manifest.rs"]
#[allow(dead_code)]
mod manifest;
use manifest::Controller;
#[path = "support/ovn_dbs.rs"]
mod ovn_dbs;
use ovn_dbs::{add_chassis, add_cr_binding, claim, nbctl, wait_until};

/// The beacon's `cr-` port binding as northd makes it; its uuid.
fn add_beacon_binding(sb: &OvsdbServer) -> String {
    add_cr_binding(sb, "cr-yc-svcgw-beacon-gw")
}

/// The controller with the three service-gateway chassis of these tests.
fn start_controller(manifests: &Path, nb: &OvsdbServer, extra: &[&str]) -> Controller {
    let mut args = vec!["--svcgw-chassis=node-1:20,node-2:10,node-3:5"];
    args.extend_from_slice(extra);
    Controller::start(manifests, &nb.unix_remote(), &args)
}

/// The examples a cross-VPC service needs (namespaces, VPCs, subnets, the EIP gateway it
/// also uses, the service).
fn cross_vpc_manifests(to: &Path) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for f in [
        "00-namespaces.yaml",
        "01-vpcs.yaml",
        "02-subnets.yaml",
        "03-eip-gateway.yaml",
        "13-cross-vpc.yaml",
    ] {
        std::fs::copy(examples.join(f), to.join(f)).expect("copy example");
    }
}

/// `external_ids` of a row ycloud owns, as OVSDB JSON.
fn ours(kind: &str, name: &str, role: &str) -> serde_json::Value {
    json!([
        "map",
        [
            ["ycloud.io/owner", "ycloud"],
            ["ycloud.io/kind", kind],
            ["ycloud.io/name", name],
            ["ycloud.io/role", role]
        ]
    ])
}

/// One NB transaction with `ovsdb-client` (the ops as JSON): rows an earlier controller
/// left in NB.
fn nb_transact(nb: &OvsdbServer, ops: serde_json::Value) {
    let mut txn = vec![json!("OVN_Northbound")];
    txn.extend(ops.as_array().expect("ops").iter().cloned());
    let out = nb
        .ovsdb_client(&["transact", &serde_json::Value::Array(txn).to_string()])
        .expect("ovsdb-client transact");
    assert!(!out.contains("error"), "NB transaction failed: {out}");
}

/// The controller with `--ovn-sb` on the cross-VPC example plus one backend.
fn start_cross_vpc(nb: &OvsdbServer, sb: &OvsdbServer) -> (tempfile::TempDir, Controller) {
    let dir = tempfile::tempdir().expect("tmp");
    cross_vpc_manifests(dir.path());
    catalog_backend(dir.path());
    let ctl = start_controller(dir.path(), nb, &[&format!("--ovn-sb={}", sb.unix_remote())]);
    (dir, ctl)
}

/// A pod the cross-VPC example's service selects: with a backend it has load balancers.
fn catalog_backend(to: &Path) {
    std::fs::write(
        to.join("20-pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: catalog-1, namespace: shop, \
         labels: {app: catalog}}\nspec: {containers: [{name: c}]}\n",
    )
    .expect("pod manifest");
}

/// `yc-svcgw`'s `options:chassis`, or `None` while the router is not there.
fn pinned(nb: &OvsdbServer) -> Option<String> {
    let out = nbctl(
        nb,
        &[
            "--bare",
            "--columns=options",
            "find",
            "Logical_Router",
            "name=yc-svcgw",
        ],
    );
    out.split_whitespace()
        .find_map(|kv| kv.strip_prefix("chassis="))
        .map(|c| c.trim_matches('"').to_owned())
}

/// The beacon port's `Gateway_Chassis` as `chassis:priority`, sorted; empty while the
/// port is not there.
fn beacon_chassis(nb: &OvsdbServer) -> Vec<String> {
    let ports = nbctl(
        nb,
        &["--bare", "--columns=name", "list", "Logical_Router_Port"],
    );
    if !ports.split_whitespace().any(|p| p == "yc-svcgw-beacon-gw") {
        return Vec::new();
    }
    let rows = nbctl(
        nb,
        &[
            "--bare",
            "--columns=name,chassis_name,priority",
            "list",
            "Gateway_Chassis",
        ],
    );
    let words: Vec<&str> = rows.split_whitespace().collect();
    let mut v: Vec<String> = words
        .chunks(3)
        .filter(|c| c[0].starts_with("yc-svcgw-beacon-gw-"))
        .map(|c| format!("{}:{}", c[1], c[2]))
        .collect();
    v.sort();
    v
}

#[test]
fn the_service_gateway_is_repinned_to_the_chassis_sb_says_holds_its_beacon() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    nbctl(&nb, &["init"]);
    let sb = OvsdbServer::start(SchemaFile::Sb).expect("SB");
    let n1 = add_chassis(&sb, "node-1", "192.0.2.1");
    let n2 = add_chassis(&sb, "node-2", "192.0.2.2");
    let dir = tempfile::tempdir().expect("tmp");
    cross_vpc_manifests(dir.path());
    let _ctl = start_controller(
        dir.path(),
        &nb,
        &[&format!("--ovn-sb={}", sb.unix_remote())],
    );

    // Before any election: the top chassis, and the beacon with every priority.
    wait_until("yc-svcgw in NB", Duration::from_secs(30), || {
        pinned(&nb).is_some()
    });
    assert_eq!(pinned(&nb).as_deref(), Some("node-1"));
    wait_until(
        "the beacon's gateway chassis",
        Duration::from_secs(10),
        || !beacon_chassis(&nb).is_empty(),
    );
    assert_eq!(
        beacon_chassis(&nb),
        ["node-1:20", "node-2:10", "node-3:5"],
        "the beacon carries the --svcgw-chassis priorities"
    );
    let routers = nbctl(&nb, &["--bare", "--columns=name", "list", "Logical_Router"]);
    assert!(routers.contains("yc-svcgw-beacon"), "{routers}");

    // At start a standby can hold the beacon for a moment before the top chassis takes it
    // (node-2 before its BFD sessions are up): not followed, the first holder counts once
    // it has held for SETTLE. Then OVN elects node-1 (nothing moves).
    let pb = add_beacon_binding(&sb);
    claim(&sb, &pb, Some(&n2));
    let held = Instant::now() + Duration::from_secs(1);
    while Instant::now() < held {
        assert_eq!(
            pinned(&nb).as_deref(),
            Some("node-1"),
            "a start-up holder was followed before it settled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    claim(&sb, &pb, None);
    claim(&sb, &pb, Some(&n1));
    let settled = Instant::now() + ycloud_controller::sbwatch::SETTLE + Duration::from_secs(1);
    while Instant::now() < settled {
        assert_eq!(
            pinned(&nb).as_deref(),
            Some("node-1"),
            "a start-up flip of the beacon moved the gateway"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A failover to node-2 is followed at once.
    let moved = Instant::now();
    claim(&sb, &pb, None);
    claim(&sb, &pb, Some(&n2));
    wait_until(
        "yc-svcgw re-pinned to node-2",
        Duration::from_secs(10),
        || pinned(&nb).as_deref() == Some("node-2"),
    );
    eprintln!(
        "FIGURE svcgw re-pin: SB claim -> NB options:chassis in {} ms",
        moved.elapsed().as_millis()
    );
    // Released (node-2 dying too, or a move in progress): the gateway stays where it is,
    // not back on the top chassis that may be the dead one.
    claim(&sb, &pb, None);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(pinned(&nb).as_deref(), Some("node-2"));
    // A chassis that is not a service-gateway chassis is not followed.
    let stranger = add_chassis(&sb, "node-9", "192.0.2.9");
    claim(&sb, &pb, Some(&stranger));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(pinned(&nb).as_deref(), Some("node-1"));
    // Failback is OVN's (the beacon's priorities): node-1 claims again, the gateway follows.
    claim(&sb, &pb, None);
    claim(&sb, &pb, Some(&n2));
    wait_until("yc-svcgw on node-2 again", Duration::from_secs(10), || {
        pinned(&nb).as_deref() == Some("node-2")
    });
}

#[test]
fn without_ovn_sb_the_service_gateway_stays_pinned_to_the_top_chassis_and_has_no_beacon() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    nbctl(&nb, &["init"]);
    let dir = tempfile::tempdir().expect("tmp");
    cross_vpc_manifests(dir.path());
    let _ctl = start_controller(dir.path(), &nb, &[]);
    wait_until("yc-svcgw in NB", Duration::from_secs(30), || {
        pinned(&nb).is_some()
    });
    assert_eq!(pinned(&nb).as_deref(), Some("node-1"));
    std::thread::sleep(Duration::from_millis(500));
    let routers = nbctl(&nb, &["--bare", "--columns=name", "list", "Logical_Router"]);
    assert!(!routers.contains("yc-svcgw-beacon"), "{routers}");
    assert!(beacon_chassis(&nb).is_empty());
}

#[test]
fn an_unreachable_sb_holds_nothing_up_and_the_gateway_is_pinned_to_the_top_chassis() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    nbctl(&nb, &["init"]);
    let dir = tempfile::tempdir().expect("tmp");
    cross_vpc_manifests(dir.path());
    let missing = dir.path().join("no-sb.sock");
    let _ctl = start_controller(
        dir.path(),
        &nb,
        &[&format!("--ovn-sb=unix:{}", missing.display())],
    );
    wait_until("yc-svcgw in NB", Duration::from_secs(30), || {
        pinned(&nb).is_some()
    });
    assert_eq!(pinned(&nb).as_deref(), Some("node-1"));
}

/// The routers whose `load_balancer` column holds the load balancer named `lb`, by name
/// (sorted); empty while that LB is not in NB.
fn routers_holding(nb: &OvsdbServer, lb: &str) -> Vec<String> {
    let uuid = nbctl(
        nb,
        &[
            "--bare",
            "--columns=_uuid",
            "find",
            "Load_Balancer",
            &format!("name=\"{lb}\""),
        ],
    );
    if uuid.is_empty() {
        return Vec::new();
    }
    let mut v: Vec<String> = nbctl(
        nb,
        &[
            "--bare",
            "--columns=name",
            "find",
            "Logical_Router",
            &format!("load_balancer{{>=}}{uuid}"),
        ],
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    v.sort();
    v
}

/// Issue 12's pre-failover drop: the cross-VPC load balancer was attached to whichever
/// router of the service gateway the planner's index listed first — `yc-svcgw` or, as
/// often, its beacon, where no packet ever goes (every cross-VPC SYN dropped at the
/// gateway chassis). The index lists rows by UUID: here the beacon (left in NB by an earlier
/// run of the controller) has the lowest UUID there is, so it comes first every time.
#[test]
fn the_cross_vpc_load_balancer_hangs_on_the_gateway_router_never_on_its_beacon() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    nbctl(&nb, &["init"]);
    let sb = OvsdbServer::start(SchemaFile::Sb).expect("SB");
    add_chassis(&sb, "node-1", "192.0.2.1");
    // The lowest UUID there is: the planner's index lists rows by UUID.
    nb_transact(
        &nb,
        json!([{"op": "insert", "table": "Logical_Router",
                "uuid": "00000000-0000-4000-8000-000000000001",
                "row": {"name": "yc-svcgw-beacon",
                        "external_ids": ours("service-gateway", "cluster", "beacon")}}]),
    );
    let _run = start_cross_vpc(&nb, &sb);
    let lb = "ysvc:shop/catalog:tcp:svcgw";
    wait_until(
        "the cross-VPC load balancer attached",
        Duration::from_secs(30),
        || !routers_holding(&nb, lb).is_empty(),
    );
    // a few more passes: nothing moves it
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(routers_holding(&nb, lb), ["yc-svcgw"]);
}

/// An upgrade from a controller that hung the cross-VPC load balancer on the beacon: the
/// row is kept (same name and role), attached to `yc-svcgw` and taken off the beacon.
#[test]
fn a_load_balancer_an_older_controller_hung_on_the_beacon_moves_to_the_gateway_router() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    nbctl(&nb, &["init"]);
    let sb = OvsdbServer::start(SchemaFile::Sb).expect("SB");
    add_chassis(&sb, "node-1", "192.0.2.1");
    nb_transact(
        &nb,
        json!([
            {"op": "insert", "table": "Load_Balancer", "uuid-name": "lb",
             "row": {"name": "ysvc:shop/catalog:tcp:svcgw", "protocol": "tcp",
                     "external_ids": ours("service", "shop/catalog", "tcp:svcgw")}},
            {"op": "insert", "table": "Logical_Router",
             "row": {"name": "yc-svcgw-beacon", "load_balancer": ["named-uuid", "lb"],
                     "external_ids": ours("service-gateway", "cluster", "beacon")}},
        ]),
    );
    let _run = start_cross_vpc(&nb, &sb);
    let lb = "ysvc:shop/catalog:tcp:svcgw";
    wait_until(
        "the cross-VPC load balancer on yc-svcgw alone",
        Duration::from_secs(30),
        || routers_holding(&nb, lb) == ["yc-svcgw"],
    );
    let rows = nbctl(
        &nb,
        &[
            "--bare",
            "--columns=_uuid",
            "find",
            "Load_Balancer",
            &format!("name=\"{lb}\""),
        ],
    );
    assert_eq!(rows.lines().count(), 1, "one row, kept: {rows}");
}
