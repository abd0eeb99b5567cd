//! OVN-native health checks against a real OVN_Northbound ovsdb-server: the
//! `Load_Balancer_Health_Check` rows, `ip_port_mappings` and `svc_monitor_mac` reach NB; a
//! second reconcile writes nothing; hand-made drift is repaired with small mutations; an
//! operator's `svc_monitor_mac` is never overwritten; turning the check off removes the
//! rows (they are owned through the load balancer's `health_check` column).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ycloud_controller::compiler::lb::{DesiredLb, add_native_checks, service_lbs};
use ycloud_controller::compiler::network::{DesiredVpc, vpc_rows};
use ycloud_controller::compiler::plan::{Plan, SVC_MONITOR_MAC, plan_service, plan_vpc};
use ycloud_controller::compiler::topology::{
    Backend, DatapathMode, MonitorPort, NativeCheck, Port, PortOwner, Protocol, Scenarios, Service,
    ServicePort, Subnet, Vpc, monitor_source,
};
use ycloud_ovsdb::ops::Operation;

#[path = "support/nb.rs"]
mod nb_support;

use nb_support::Nb;

impl Nb {
    async fn start_initialized() -> Nb {
        let nb = Nb::start().await;
        // What `ovn-nbctl init` (or northd's deployment) leaves: one NB_Global row.
        nb.nbctl(&["init"]);
        nb.settle().await;
        nb
    }

    async fn reconcile(&self, d: &DesiredVpc, lbs: &[DesiredLb]) -> Vec<Operation> {
        let snap = self.cache.snapshot();
        let mut plan = Plan::new("v");
        plan_vpc(&snap, "tenant-a", Some(d), &mut plan);
        if !plan.is_empty() {
            self.client.transact(&plan.ops).await.expect("vpc txn");
        }
        let mut all = plan.ops;
        let snap = self.cache.snapshot();
        let mut plan = Plan::new("s");
        plan_service(&snap, "shop/web", lbs, &mut plan).expect("plan service");
        assert!(plan.conflicts.is_empty(), "{:?}", plan.conflicts);
        if !plan.is_empty() {
            self.client.transact(&plan.ops).await.expect("service txn");
        }
        all.extend(plan.ops);
        all
    }

    fn lb(&self) -> String {
        self.nbctl(&[
            "--bare",
            "--columns=_uuid",
            "find",
            "Load_Balancer",
            "name=\"ysvc:shop/web:tcp:cluster\"",
        ])
    }

    /// Health checks as `vip → options`, read with ovn-nbctl.
    fn health_checks(&self) -> BTreeMap<String, String> {
        let lb = self.lb();
        let hcs = self.nbctl(&["get", "Load_Balancer", &lb, "health_check"]);
        hcs.trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                (
                    self.nbctl(&["get", "Load_Balancer_Health_Check", u, "vip"]),
                    self.nbctl(&["get", "Load_Balancer_Health_Check", u, "options"]),
                )
            })
            .collect()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn vpc() -> DesiredVpc {
    let v = Vpc {
        name: "tenant-a".into(),
        subnets: vec![Subnet {
            name: "a1".into(),
            cidrs: vec!["10.0.1.0/24".parse().unwrap()],
            gateways: vec![],
        }],
        join: None,
    };
    let ports: Vec<Port> = (1..=2)
        .map(|i| Port {
            name: format!("shop.web-{i}"),
            vpc: "tenant-a".into(),
            subnet: Some("a1".into()),
            mac: format!("0a:58:0a:00:01:{:02x}", 10 + i),
            ips: vec![ip(&format!("10.0.1.{}", 10 + i))],
            owner: PortOwner::Pod(format!("shop/web-{i}")),
        })
        .collect();
    vpc_rows(&v, &ports).unwrap()
}

fn lbs(check: Option<NativeCheck>) -> Vec<DesiredLb> {
    let svc = Service {
        namespace: "shop".into(),
        name: "web".into(),
        vpc: "tenant-a".into(),
        scenarios: Scenarios {
            cluster_ip: true,
            ..Default::default()
        },
        cluster_ips: vec![ip("10.96.0.100")],
        eip: None,
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            backends: (1..=2)
                .map(|i| Backend {
                    ip: ip(&format!("10.0.1.{}", 10 + i)),
                    port: 8080,
                    healthy: true,
                })
                .collect(),
        }],
        affinity_timeout: None,
        hash_fields: vec![],
    };
    let mut lbs = service_lbs(&svc, DatapathMode::Default).unwrap();
    if let Some(c) = check {
        let src = monitor_source("10.0.1.0/24".parse().unwrap()).unwrap();
        let ports = (1..=2)
            .map(|i| {
                (
                    ip(&format!("10.0.1.{}", 10 + i)),
                    MonitorPort {
                        lsp: format!("shop.web-{i}"),
                        source: src,
                    },
                )
            })
            .collect();
        add_native_checks(&mut lbs, &c, &ports);
    }
    lbs
}

fn check() -> NativeCheck {
    NativeCheck::from_millis(2000, 1000, 1, 2)
}

#[tokio::test]
async fn native_check_rows_reach_nb_and_a_second_reconcile_writes_nothing() {
    let nb = Nb::start_initialized().await;
    let d = vpc();
    let ops = nb.reconcile(&d, &lbs(Some(check()))).await;
    assert!(!ops.is_empty());
    nb.settle().await;
    let lb = nb.lb();
    assert_eq!(
        nb.health_checks(),
        BTreeMap::from([(
            "\"10.96.0.100:80\"".to_owned(),
            "{failure_count=\"2\", interval=\"2\", success_count=\"1\", timeout=\"1\"}".to_owned()
        )])
    );
    assert_eq!(
        nb.nbctl(&["get", "Load_Balancer", &lb, "ip_port_mappings"]),
        "{\"10.0.1.11\"=\"shop.web-1:10.0.1.254\", \"10.0.1.12\"=\"shop.web-2:10.0.1.254\"}"
    );
    assert_eq!(
        nb.nbctl(&["get", "NB_Global", ".", "options:svc_monitor_mac"]),
        format!("\"{SVC_MONITOR_MAC}\"")
    );
    // The check rows carry our ownership keys.
    let owned = nb.nbctl(&[
        "--bare",
        "--columns=vip",
        "find",
        "Load_Balancer_Health_Check",
        "external_ids:ycloud.io/name=\"shop/web\"",
        "external_ids:ycloud.io/owner=ycloud",
    ]);
    assert_eq!(owned, "10.96.0.100:80");

    let again = nb.reconcile(&d, &lbs(Some(check()))).await;
    assert!(again.is_empty(), "no change, no write: {again:?}");
}

#[tokio::test]
async fn drift_of_native_checks_is_repaired_with_small_writes_and_an_operators_mac_is_kept() {
    let nb = Nb::start_initialized().await;
    nb.nbctl(&[
        "set",
        "NB_Global",
        ".",
        "options:svc_monitor_mac=\"0a:00:00:00:ff:01\"",
    ]);
    nb.settle().await;
    let d = vpc();
    nb.reconcile(&d, &lbs(Some(check()))).await;
    nb.settle().await;
    assert_eq!(
        nb.nbctl(&["get", "NB_Global", ".", "options:svc_monitor_mac"]),
        "\"0a:00:00:00:ff:01\"",
        "an operator's MAC is never overwritten"
    );

    // By hand: an option changed, a mapping removed.
    let lb = nb.lb();
    let hc = nb.nbctl(&[
        "--bare",
        "--columns=_uuid",
        "list",
        "Load_Balancer_Health_Check",
    ]);
    nb.nbctl(&[
        "set",
        "Load_Balancer_Health_Check",
        &hc,
        "options:interval=30",
    ]);
    nb.nbctl(&[
        "remove",
        "Load_Balancer",
        &lb,
        "ip_port_mappings",
        "10.0.1.12",
    ]);
    nb.settle().await;
    let ops = nb.reconcile(&d, &lbs(Some(check()))).await;
    assert_eq!(ops.len(), 2, "one mutate per drifted map: {ops:?}");
    assert!(ops.iter().all(|o| o.op_name() == "mutate"), "{ops:?}");
    nb.settle().await;
    assert!(
        nb.health_checks()
            .values()
            .all(|o| o.contains("interval=\"2\""))
    );
    assert!(
        nb.nbctl(&["get", "Load_Balancer", &lb, "ip_port_mappings"])
            .contains("shop.web-2:10.0.1.254")
    );

    // By hand: the check detached from the load balancer (deleted with it): put back.
    nb.nbctl(&["clear", "Load_Balancer", &lb, "health_check"]);
    nb.settle().await;
    assert!(nb.health_checks().is_empty());
    nb.reconcile(&d, &lbs(Some(check()))).await;
    nb.settle().await;
    assert_eq!(nb.health_checks().len(), 1);

    // Turning native checks off removes our rows and mappings; the MAC stays (other
    // services may use it, and it may be the operator's).
    nb.reconcile(&d, &lbs(None)).await;
    nb.settle().await;
    assert!(nb.health_checks().is_empty());
    assert_eq!(
        nb.nbctl(&[
            "--bare",
            "--columns=_uuid",
            "list",
            "Load_Balancer_Health_Check"
        ]),
        "",
        "non-root rows go with their last reference"
    );
    assert_eq!(
        nb.nbctl(&["get", "Load_Balancer", &lb, "ip_port_mappings"]),
        "{}"
    );
    assert_eq!(
        nb.reconcile(&d, &lbs(None)).await,
        vec![],
        "and then nothing to do"
    );
}
