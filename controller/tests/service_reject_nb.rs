//! The service-CIDR reject ACLs (`network::add_service_reject`) against a real
//! OVN_Northbound ovsdb-server: one per switch and family, a second reconcile writes nothing,
//! a changed exclusion is one update per switch, drift is repaired, a foreign ACL on our
//! switch survives, and a VPC without service CIDRs (or gone) leaves no ACL behind.

use ipnet::IpNet;
use ycloud_controller::compiler::network::{
    DesiredRoute, DesiredVpc, add_service_reject, service_reject_acl_name, vpc_rows,
};
use ycloud_controller::compiler::plan::{Plan, plan_vpc};
use ycloud_controller::compiler::topology::{Subnet, Vpc};
use ycloud_ovsdb::ops::Operation;

#[path = "support/nb.rs"]
mod nb_support;

use nb_support::Nb;

impl Nb {
    async fn reconcile(&self, d: Option<&DesiredVpc>) -> Vec<Operation> {
        let mut plan = Plan::new("v");
        plan_vpc(&self.cache.snapshot(), "tenant-a", d, &mut plan);
        assert!(plan.conflicts.is_empty(), "{:?}", plan.conflicts);
        if !plan.is_empty() {
            self.client.transact(&plan.ops).await.expect("transaction");
        }
        self.settle().await;
        plan.ops
    }

    /// `(switch, acl name, match)` for every ACL every switch holds, sorted.
    fn acls(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for sw in self
            .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
            .split_whitespace()
        {
            let uuids = self.nbctl(&["--bare", "--columns=acls", "list", "Logical_Switch", sw]);
            for u in uuids.split_whitespace() {
                let name = self.nbctl(&["--bare", "get", "ACL", u, "name"]);
                let m = self.nbctl(&["get", "ACL", u, "match"]);
                out.push((
                    sw.to_owned(),
                    name.trim_matches('"').to_owned(),
                    m.trim_matches('"').to_owned(),
                ));
            }
        }
        out.sort();
        out
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Two subnets and a join switch: three switches.
fn tenant_a(cidrs: &[&str], routed: &[&str]) -> DesiredVpc {
    let vpc = Vpc {
        name: "tenant-a".into(),
        subnets: vec![
            Subnet {
                name: "a1".into(),
                cidrs: vec![net("10.0.1.0/24")],
                gateways: vec![],
            },
            Subnet {
                name: "a2".into(),
                cidrs: vec![net("10.0.2.0/24"), net("fd00:a2::/64")],
                gateways: vec![],
            },
        ],
        join: Some(net("100.64.0.0/24")),
    };
    let mut d = vpc_rows(&vpc, &[]).unwrap();
    for r in routed {
        d.router.routes.insert(DesiredRoute {
            ip_prefix: (*r).to_owned(),
            nexthop: "100.66.0.2".to_owned(),
        });
    }
    let cidrs: Vec<IpNet> = cidrs.iter().map(|c| net(c)).collect();
    add_service_reject("tenant-a", &mut d, &cidrs);
    d
}

fn count(ops: &[Operation], table: &str) -> (usize, usize) {
    let inserts = ops
        .iter()
        .filter(|o| matches!(o, Operation::Insert { table: t, .. } if t == table))
        .count();
    let updates = ops
        .iter()
        .filter(|o| matches!(o, Operation::Update { table: t, .. } if t == table))
        .count();
    (inserts, updates)
}

const SWITCHES: [&str; 3] = ["yc-join-tenant-a", "yc-subnet-a1", "yc-subnet-a2"];

#[tokio::test]
async fn every_switch_of_the_vpc_gets_one_reject_per_family_and_a_second_reconcile_writes_nothing()
{
    let nb = Nb::start().await;
    let d = tenant_a(&["10.96.0.0/16", "fd00:96::/112"], &[]);
    let ops = nb.reconcile(Some(&d)).await;
    assert_eq!(count(&ops, "ACL"), (6, 0), "3 switches x 2 families");
    let acls = nb.acls();
    assert_eq!(acls.len(), 6, "{acls:?}");
    for sw in SWITCHES {
        assert!(acls.contains(&(
            sw.to_owned(),
            service_reject_acl_name("ipv4"),
            "ip4.dst == 10.96.0.0/16".to_owned()
        )));
        assert!(acls.contains(&(
            sw.to_owned(),
            service_reject_acl_name("ipv6"),
            "ip6.dst == fd00:96::/112".to_owned()
        )));
    }
    let row = nb.nbctl(&[
        "--bare",
        "--columns=direction,priority,action",
        "find",
        "ACL",
        "name=yc-svc-reject-ipv4",
    ]);
    assert!(
        row.split("\n\n")
            .all(
                |r| r.split_whitespace().collect::<Vec<_>>() == ["reject", "to-lport", "1000"]
                    || r.split_whitespace().collect::<Vec<_>>() == ["to-lport", "1000", "reject"]
            ),
        "{row}"
    );
    assert!(nb.reconcile(Some(&d)).await.is_empty(), "second reconcile");
}

#[tokio::test]
async fn a_new_cross_vpc_route_inside_the_cidr_is_one_update_per_switch() {
    let nb = Nb::start().await;
    nb.reconcile(Some(&tenant_a(&["10.96.0.0/16"], &[]))).await;
    let d = tenant_a(&["10.96.0.0/16"], &["10.96.0.100/32"]);
    let ops = nb.reconcile(Some(&d)).await;
    assert_eq!(count(&ops, "ACL"), (0, 3), "{ops:?}");
    assert!(
        nb.acls()
            .iter()
            .all(|(_, _, m)| m == "ip4.dst == 10.96.0.0/16 && ip4.dst != {10.96.0.100}")
    );
    assert!(nb.reconcile(Some(&d)).await.is_empty());
}

#[tokio::test]
async fn drift_is_repaired_and_a_foreign_acl_on_our_switch_survives() {
    let nb = Nb::start().await;
    let d = tenant_a(&["10.96.0.0/16"], &[]);
    nb.reconcile(Some(&d)).await;
    // By hand: one switch loses its reject, another's match is edited, and an operator
    // adds an ACL of their own.
    let a1 = nb.nbctl(&[
        "--bare",
        "--columns=acls",
        "list",
        "Logical_Switch",
        "yc-subnet-a1",
    ]);
    nb.nbctl(&["remove", "Logical_Switch", "yc-subnet-a1", "acls", &a1]);
    let a2 = nb.nbctl(&[
        "--bare",
        "--columns=acls",
        "list",
        "Logical_Switch",
        "yc-subnet-a2",
    ]);
    nb.nbctl(&["set", "ACL", &a2, "match=\"ip4.dst == 10.0.0.0/8\""]);
    nb.nbctl(&[
        "acl-add",
        "yc-join-tenant-a",
        "from-lport",
        "2000",
        "ip4.src == 100.64.0.9",
        "drop",
    ]);
    nb.settle().await;
    let ops = nb.reconcile(Some(&d)).await;
    assert_eq!(count(&ops, "ACL"), (1, 1), "{ops:?}");
    let acls = nb.acls();
    assert_eq!(acls.len(), 4, "{acls:?}");
    for sw in SWITCHES {
        assert!(acls.contains(&(
            sw.to_owned(),
            service_reject_acl_name("ipv4"),
            "ip4.dst == 10.96.0.0/16".to_owned()
        )));
    }
    assert!(
        acls.iter()
            .any(|(sw, _, m)| sw == "yc-join-tenant-a" && m == "ip4.src == 100.64.0.9")
    );
    assert!(nb.reconcile(Some(&d)).await.is_empty());

    // No service CIDR any more: our ACLs go, the operator's stays.
    let ops = nb.reconcile(Some(&tenant_a(&[], &[]))).await;
    assert_eq!(
        ops.iter()
            .filter(|o| matches!(o, Operation::Mutate { .. }))
            .count(),
        3,
        "one mutate per switch drops its reference: {ops:?}"
    );
    let acls = nb.acls();
    assert_eq!(acls.len(), 1, "{acls:?}");
    assert_eq!(
        nb.nbctl(&["--bare", "--columns=_uuid", "list", "ACL"])
            .lines()
            .count(),
        1
    );

    // The VPC gone: its switches go, the operator's ACL with them (it hung off our switch).
    nb.reconcile(None).await;
    assert_eq!(nb.nbctl(&["--bare", "--columns=_uuid", "list", "ACL"]), "");
}
