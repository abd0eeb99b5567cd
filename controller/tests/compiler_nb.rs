//! State-in/state-out tests of the compiler against a real OVN_Northbound ovsdb-server:
//! initial rows → reconcile → expected rows; a second reconcile writes nothing; drift made
//! by hand is repaired; rows we don't own survive.

use std::net::IpAddr;

use ycloud_controller::compiler::lb::{DesiredLb, service_lbs};
use ycloud_controller::compiler::names;
use ycloud_controller::compiler::network::{DesiredVpc, vpc_rows};
use ycloud_controller::compiler::plan::{Plan, plan_service, plan_vpc};
use ycloud_controller::compiler::topology::{
    Backend, DatapathMode, Port, PortOwner, Protocol, Scenarios, Service, ServicePort, Subnet, Vpc,
};
use ycloud_ovsdb::ops::Operation;

#[path = "support/nb.rs"]
mod nb_support;

use nb_support::Nb;

impl Nb {
    /// One reconcile of a VPC and its services: plan against the cache, one transaction.
    async fn reconcile(
        &self,
        vpc: &str,
        d: Option<&DesiredVpc>,
        svcs: &[(&str, Vec<DesiredLb>)],
    ) -> Vec<Operation> {
        let snap = self.cache.snapshot();
        let mut plan = Plan::new("v");
        plan_vpc(&snap, vpc, d, &mut plan);
        if !plan.is_empty() {
            self.client
                .transact(&plan.ops)
                .await
                .expect("vpc transaction");
        }
        let mut all = plan.ops;
        let snap = self.cache.snapshot();
        let mut plan = Plan::new("s");
        for (owner, lbs) in svcs {
            plan_service(&snap, owner, lbs, &mut plan).expect("plan service");
        }
        if !plan.is_empty() {
            self.client
                .transact(&plan.ops)
                .await
                .expect("service transaction");
        }
        all.extend(plan.ops);
        all
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tenant_a() -> Vpc {
    Vpc {
        name: "tenant-a".into(),
        subnets: vec![
            Subnet {
                name: "a1".into(),
                cidrs: vec!["10.0.1.0/24".parse().unwrap()],
                gateways: vec![],
            },
            Subnet {
                name: "a2".into(),
                cidrs: vec!["10.0.2.0/24".parse().unwrap()],
                gateways: vec![],
            },
        ],
        join: Some("100.64.0.0/24".parse().unwrap()),
    }
}

fn pods() -> Vec<Port> {
    (1..=2)
        .map(|i| Port {
            name: format!("shop.web-{i}"),
            vpc: "tenant-a".into(),
            subnet: Some("a1".into()),
            mac: format!("0a:00:00:00:01:{:02x}", 10 + i),
            ips: vec![ip(&format!("10.0.1.{}", 10 + i))],
            owner: PortOwner::Pod(format!("shop/web-{i}")),
        })
        .collect()
}

fn web(backends: usize) -> Service {
    Service {
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
            backends: (0..backends)
                .map(|i| Backend {
                    ip: ip(&format!("10.0.{}.{}", 1 + i / 250, 1 + i % 250)),
                    port: 8080,
                    healthy: true,
                })
                .collect(),
        }],
        affinity_timeout: Some(600),
        hash_fields: vec![],
    }
}

fn op_bytes(ops: &[Operation]) -> usize {
    serde_json::to_vec(&ops.iter().map(Operation::to_json).collect::<Vec<_>>())
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_vpc_and_a_service_reach_nb_and_a_second_reconcile_writes_nothing() {
    let nb = Nb::start().await;
    let vpc = vpc_rows(&tenant_a(), &pods()).unwrap();
    let lbs = service_lbs(&web(2), DatapathMode::Offload).unwrap();
    let ops = nb
        .reconcile("tenant-a", Some(&vpc), &[("shop/web", lbs.clone())])
        .await;
    assert!(!ops.is_empty());

    // What ovn-nbctl sees is what we meant.
    assert_eq!(
        nb.nbctl(&["--bare", "--columns=name", "list", "Logical_Router"]),
        "yc-vpc-tenant-a"
    );
    let switches = nb.nbctl(&[
        "--bare",
        "--columns=name",
        "find",
        "Logical_Switch",
        "external_ids:ycloud.io/name=tenant-a",
    ]);
    let mut switches: Vec<_> = switches.lines().filter(|l| !l.is_empty()).collect();
    switches.sort();
    assert_eq!(
        switches,
        ["yc-join-tenant-a", "yc-subnet-a1", "yc-subnet-a2"]
    );
    let group_uuid = nb.nbctl(&[
        "--bare",
        "--columns=_uuid",
        "find",
        "Load_Balancer_Group",
        "name=yc-lbg-tenant-a",
    ]);
    for sw in &switches {
        assert_eq!(
            nb.nbctl(&["get", "Logical_Switch", sw, "load_balancer_group"]),
            format!("[{group_uuid}]")
        );
    }
    let lb = nb.nbctl(&[
        "--bare",
        "--columns=_uuid",
        "find",
        "Load_Balancer",
        "name=\"ysvc:shop/web:tcp:cluster\"",
    ]);
    assert_eq!(
        nb.nbctl(&["get", "Load_Balancer_Group", &group_uuid, "load_balancer"]),
        format!("[{lb}]")
    );
    assert_eq!(
        nb.nbctl(&["get", "Load_Balancer", &lb, "vips"]),
        r#"{"10.96.0.100:80"="10.0.1.1:8080,10.0.1.2:8080"}"#
    );
    assert_eq!(
        nb.nbctl(&["get", "Load_Balancer", &lb, "selection_fields"]),
        "[ip_dst, ip_src, tp_dst, tp_src]"
    );
    assert_eq!(
        nb.nbctl(&["get", "Load_Balancer", &lb, "options:affinity_timeout"]),
        "\"600\""
    );
    assert_eq!(
        nb.nbctl(&["get", "Logical_Switch_Port", "shop.web-1", "port_security"]),
        r#"["0a:00:00:00:01:0b 10.0.1.11"]"#
    );
    assert_eq!(nb.nbctl(&["lr-route-list", "yc-vpc-tenant-a"]), "");

    let again = nb
        .reconcile("tenant-a", Some(&vpc), &[("shop/web", lbs)])
        .await;
    assert!(again.is_empty(), "second reconcile wrote {again:?}");
}

#[tokio::test]
async fn one_backend_added_to_a_thousand_is_one_small_mutate() {
    let nb = Nb::start().await;
    let vpc = vpc_rows(&tenant_a(), &[]).unwrap();
    let big = service_lbs(&web(1000), DatapathMode::Default).unwrap();
    let created = nb
        .reconcile("tenant-a", Some(&vpc), &[("shop/web", big)])
        .await;
    let create_bytes = op_bytes(&created);

    let mut svc = web(1001);
    svc.affinity_timeout = Some(600);
    let one_more = service_lbs(&svc, DatapathMode::Default).unwrap();
    let ops = nb
        .reconcile("tenant-a", Some(&vpc), &[("shop/web", one_more)])
        .await;
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0].op_name(), "mutate");
    let bytes = op_bytes(&ops);
    // The VIP's value is a string: the whole backend list is rewritten, but only that key.
    eprintln!(
        "new service+vpc: {} ops {create_bytes} bytes; +1 backend of 1000: {} ops {bytes} bytes",
        created.len(),
        ops.len()
    );
    assert!(bytes < create_bytes, "{bytes} >= {create_bytes}");
    let lb = nb.nbctl(&[
        "--bare",
        "--columns=_uuid",
        "find",
        "Load_Balancer",
        "name=\"ysvc:shop/web:tcp:cluster\"",
    ]);
    let vips = nb.nbctl(&["get", "Load_Balancer", &lb, "vips"]);
    assert_eq!(vips.matches(":8080").count(), 1001);
}

#[tokio::test]
async fn drift_made_by_hand_is_repaired_and_foreign_rows_survive() {
    let nb = Nb::start().await;
    let vpc = vpc_rows(&tenant_a(), &pods()).unwrap();
    let lbs = service_lbs(&web(2), DatapathMode::Default).unwrap();
    nb.reconcile("tenant-a", Some(&vpc), &[("shop/web", lbs.clone())])
        .await;

    // Someone else's rows, and a hand-made mess in ours.
    nb.nbctl(&[
        "lb-add",
        "foreign-lb",
        "10.96.9.9:80",
        "10.0.1.99:80",
        "tcp",
    ]);
    nb.nbctl(&["ls-add", "foreign-ls"]);
    nb.nbctl(&[
        "clear",
        "Logical_Switch",
        "yc-subnet-a2",
        "load_balancer_group",
    ]);
    nb.nbctl(&["lsp-del", "shop.web-2"]);
    let lb = nb.nbctl(&[
        "--bare",
        "--columns=_uuid",
        "find",
        "Load_Balancer",
        "name=\"ysvc:shop/web:tcp:cluster\"",
    ]);
    nb.nbctl(&[
        "set",
        "Load_Balancer",
        &lb,
        "vips:\"10.96.0.100:80\"=\"10.0.1.66:80\"",
    ]);
    nb.settle().await;

    let ops = nb
        .reconcile("tenant-a", Some(&vpc), &[("shop/web", lbs.clone())])
        .await;
    assert!(!ops.is_empty());
    assert!(
        !nb.nbctl(&[
            "get",
            "Logical_Switch",
            "yc-subnet-a2",
            "load_balancer_group"
        ])
        .contains("[]")
    );
    assert_eq!(
        nb.nbctl(&[
            "--bare",
            "--columns=name",
            "list",
            "Logical_Switch_Port",
            "shop.web-2"
        ]),
        "shop.web-2"
    );
    assert_eq!(
        nb.nbctl(&["get", "Load_Balancer", &lb, "vips"]),
        r#"{"10.96.0.100:80"="10.0.1.1:8080,10.0.1.2:8080"}"#
    );
    let again = nb
        .reconcile("tenant-a", Some(&vpc), &[("shop/web", lbs)])
        .await;
    assert!(again.is_empty(), "{again:?}");

    // The service and then the VPC go: everything we own goes, nothing else.
    nb.reconcile("tenant-a", Some(&vpc), &[("shop/web", vec![])])
        .await;
    assert_eq!(
        nb.nbctl(&["--bare", "--columns=name", "list", "Load_Balancer"]),
        "foreign-lb"
    );
    nb.reconcile("tenant-a", None, &[]).await;
    assert_eq!(
        nb.nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"]),
        "foreign-ls"
    );
    assert_eq!(
        nb.nbctl(&["--bare", "--columns=name", "list", "Logical_Router"]),
        ""
    );
    assert_eq!(
        nb.nbctl(&["--bare", "--columns=name", "list", "Logical_Switch_Port"]),
        ""
    );
    assert_eq!(
        nb.nbctl(&["--bare", "--columns=name", "list", "Load_Balancer_Group"]),
        ""
    );
    let _ = names::OWNER_KEY;
}

#[tokio::test]
async fn a_service_whose_vpc_is_not_programmed_changes_nothing() {
    let nb = Nb::start().await;
    let lbs = service_lbs(&web(2), DatapathMode::Default).unwrap();
    let snap = nb.cache.snapshot();
    let mut plan = Plan::new("s");
    let err = plan_service(&snap, "shop/web", &lbs, &mut plan).unwrap_err();
    assert!(
        err.to_string()
            .contains("load-balancer group yc-lbg-tenant-a"),
        "{err}"
    );
    assert!(plan.is_empty());
}

#[tokio::test]
async fn transit_addresses_are_stable_across_restarts_and_new_vpcs_take_free_ones() {
    use ycloud_controller::compiler::alloc::{eip_transit_addrs, svcgw_transit_nets};
    use ycloud_controller::compiler::gateways::{
        EipAttachment, ServiceGatewayAttachment, add_eip_uplink, add_svcgw_uplink,
    };

    let nb = Nb::start().await;
    let transit: ipnet::IpNet = "100.65.0.0/29".parse().unwrap();
    let pool: ipnet::IpNet = "100.66.0.0/28".parse().unwrap();
    let gw = ycloud_controller::compiler::gateways::EipGateway {
        name: "public".into(),
        external: "200.0.0.1/24".parse().unwrap(),
        upstream: None,
        network_name: "external".into(),
        chassis: [("ch1".to_owned(), 1)].into(),
        transit,
    };
    let vpcs = ["b".to_owned(), "a".to_owned()];
    let snap = nb.cache.snapshot();
    let addrs = eip_transit_addrs(&snap, "public", transit, &vpcs).unwrap();
    let nets = svcgw_transit_nets(&snap, pool, &vpcs).unwrap();
    assert_eq!(addrs["b"], ip("100.65.0.2"));
    assert_eq!(addrs["a"], ip("100.65.0.3"));
    assert_eq!(nets["b"].to_string(), "100.66.0.0/29");
    assert_eq!(nets["a"].to_string(), "100.66.0.8/29");

    // Program only VPC "a" with its uplinks, as a controller would.
    let mut a = vpc_rows(
        &Vpc {
            name: "a".into(),
            ..tenant_a()
        },
        &[],
    )
    .unwrap();
    add_eip_uplink(
        &mut a,
        &gw,
        &EipAttachment {
            vpc: "a".into(),
            transit_ip: addrs["a"],
            eips: Default::default(),
            egress: None,
        },
    )
    .unwrap();
    add_svcgw_uplink(
        &mut a,
        &ServiceGatewayAttachment {
            vpc: "a".into(),
            transit: nets["a"],
            subnets: vec![],
            client_vips: Default::default(),
        },
    )
    .unwrap();
    nb.reconcile("a", Some(&a), &[]).await;

    // A restart: only "a" and a new VPC "c" are asked for. "a" keeps its addresses even
    // though it no longer sorts after "b"; "c" takes the lowest free ones.
    let vpcs = ["c".to_owned(), "a".to_owned()];
    let snap = nb.cache.snapshot();
    let addrs = eip_transit_addrs(&snap, "public", transit, &vpcs).unwrap();
    let nets = svcgw_transit_nets(&snap, pool, &vpcs).unwrap();
    assert_eq!(addrs["a"], ip("100.65.0.3"));
    assert_eq!(addrs["c"], ip("100.65.0.2"));
    assert_eq!(nets["a"].to_string(), "100.66.0.8/29");
    assert_eq!(nets["c"].to_string(), "100.66.0.0/29");

    // A /29 transit has 6 hosts, the gateway takes one: the sixth VPC finds none.
    let many: Vec<String> = (0..6).map(|i| format!("v{i}")).collect();
    let err = eip_transit_addrs(&nb.cache.snapshot(), "public", transit, &many).unwrap_err();
    assert_eq!(
        err.to_string(),
        "EIP gateway transit network: 100.65.0.0/29 has no free address for VPC v5"
    );
}

#[tokio::test]
async fn a_foreign_port_with_our_name_is_reported_and_never_adopted() {
    let nb = Nb::start().await;
    // Someone else made a port named like one of our pods' ports, on a switch of theirs.
    nb.nbctl(&["ls-add", "theirs"]);
    nb.nbctl(&["lsp-add", "theirs", "shop.web-1"]);
    nb.nbctl(&[
        "lsp-set-addresses",
        "shop.web-1",
        "0a:00:00:00:99:99 192.168.9.9",
    ]);
    nb.settle().await;

    let vpc = vpc_rows(&tenant_a(), &pods()).unwrap();
    let mut plan = Plan::new("v");
    plan_vpc(&nb.cache.snapshot(), "tenant-a", Some(&vpc), &mut plan);
    assert_eq!(
        plan.conflicts,
        [
            "Logical_Switch_Port shop.web-1 exists and is not ycloud's (no ycloud.io/owner key): left alone"
        ]
    );
    nb.client
        .transact(&plan.ops)
        .await
        .expect("the rest is programmed");
    assert_eq!(
        nb.nbctl(&["get", "Logical_Switch_Port", "shop.web-1", "addresses"]),
        r#"["0a:00:00:00:99:99 192.168.9.9"]"#
    );
    assert_eq!(
        nb.nbctl(&["get", "Logical_Switch_Port", "shop.web-1", "external_ids"]),
        "{}"
    );
    // Our other pod's port is there.
    assert_eq!(
        nb.nbctl(&[
            "get",
            "Logical_Switch_Port",
            "shop.web-2",
            "external_ids:ycloud.io/pod"
        ]),
        "\"shop/web-2\""
    );
}
