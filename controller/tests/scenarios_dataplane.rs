//! The compiler's rows carry real packets, and their flows are what offload needs.
//!
//! A real OVN sandbox (NB, SB, northd, OVS on the userspace datapath, ovn-controller), pods
//! in network namespaces, and the rows the compiler plans for two VPCs, a service, an EIP
//! gateway and the service gateway. Each scenario is real HTTP; the backends report the
//! source address they saw: in-VPC ClusterIP (the client's own address), outside → EIP
//! (the real client address), cross-VPC through the service gateway (the gateway's address),
//! hairpin (the VIP), and a VPC that is not allowed gets no path. Then `offload::check` on
//! the node's datapath flows and groups:
//! - `DatapathMode::Default` (OVN's dp_hash bucket selection): NOT offloadable, and exactly
//!   because of `hash` / `dp_hash`;
//! - `DatapathMode::Offload`: every flow of new and established service connections is
//!   eligible for tc/flower.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ycloud_controller::compiler::gateways::{
    EipAttachment, EipGateway, ServiceGatewayAttachment, add_eip_uplink, add_svcgw_uplink,
    eip_gateway_rows, service_gateway_rows,
};
use ycloud_controller::compiler::lb::service_lbs;
use ycloud_controller::compiler::names::OwnerKind;
use ycloud_controller::compiler::nb;
use ycloud_controller::compiler::network::vpc_rows;
use ycloud_controller::compiler::plan::{Plan, plan_gateway, plan_service, plan_vpc};
use ycloud_controller::compiler::topology::{
    Backend, DatapathMode, Port, PortOwner, Protocol, Scenarios, Service, ServicePort, Subnet, Vpc,
};
use ycloud_controller::offload::path::Role;
use ycloud_controller::offload::{OvsCtl, Report, Scope, check};
use ycloud_ovsdb::cache::Cache;
use ycloud_ovsdb::{Client, ClientConfig};
use ycloud_testsupport::sandbox::{OutsideSpec, Pod, PodSpec, Sandbox, SandboxOptions};

const HTTP: Duration = Duration::from_secs(3);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn port(vpc: &str, subnet: &str, name: &str, mac: &str, addr: &str) -> Port {
    Port {
        name: name.into(),
        vpc: vpc.into(),
        subnet: Some(subnet.into()),
        mac: mac.into(),
        ips: vec![ip(addr)],
        owner: PortOwner::Pod(format!("demo/{name}")),
    }
}

fn pod(sb: &Sandbox, p: &Port, switch: &str, gw: &str) -> Pod {
    let address = format!("{}/24", p.ips[0]);
    sb.add_pod(&PodSpec {
        name: &p.name,
        switch,
        mac: &p.mac,
        address: &address,
        gateway: gw,
        mtu: None,
    })
    .unwrap_or_else(|e| panic!("pod {}: {e}", p.name))
}

async fn connect(sb: &Sandbox) -> (Client, Cache) {
    let (client, _events) = Client::connect(ClientConfig::new(
        vec![sb.nb_unix().to_owned()],
        "OVN_Northbound",
    ))
    .await
    .expect("connect to the sandbox NB");
    let schema = Arc::new(client.get_schema("OVN_Northbound").await.expect("schema"));
    let cache = nb::cache(schema).expect("cache");
    client.monitor_cache(&cache).await.expect("monitor");
    (client, cache)
}

/// `n` GETs; the distinct bodies seen, or the first error.
fn get_n(from: &Pod, url: &str, n: usize) -> Result<BTreeSet<String>, String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let body = from
            .http_get(url, HTTP)
            .map_err(|e| format!("GET {url} from {}: {e}", from.name()))?;
        seen.insert(body.trim().to_owned());
    }
    Ok(seen)
}

/// Retries `get_n` until it works (flows land a moment after `--wait=hv`), bounded.
fn eventually(from: &Pod, url: &str, n: usize) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match get_n(from, url, n) {
            Ok(seen) => return seen,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

async fn apply_service(client: &Client, cache: &Cache, web: &Service, mode: DatapathMode) {
    let lbs = service_lbs(web, mode).unwrap();
    let mut plan = Plan::new("s");
    plan_service(&cache.snapshot(), "demo/web", &lbs, &mut plan).expect("plan service");
    if !plan.is_empty() {
        client
            .transact(&plan.ops)
            .await
            .expect("service transaction");
    }
}

fn ovs(sb: &Sandbox) -> OvsCtl {
    OvsCtl {
        rundir: Some(sb.env().get("OVS_RUNDIR").expect("OVS_RUNDIR").into()),
        vswitchd_ctl: None,
        bridge: "br-int".into(),
        netns: Some(sb.node_netns().to_owned()),
        timeout: Duration::from_secs(10),
    }
}

/// Every scenario of the service once more, from flows deleted, so the dump holds the flows
/// of new connections (and, within each request, established ones).
fn traffic(sb: &Sandbox, pods: &BTreeMap<&str, Pod>, outside: &Pod) {
    sb.appctl("ovs-vswitchd", &["dpctl/del-flows"]).unwrap();
    // Both backends answer, and each saw `source`.
    let both = |seen: BTreeSet<String>, source: &str, what: &str| {
        let want: BTreeSet<String> = ["web-1", "web-2"]
            .iter()
            .map(|b| format!("{b} from={source}"))
            .collect();
        assert_eq!(seen, want, "{what}");
    };
    both(
        eventually(&pods["client-a"], "http://10.96.0.100/", 16),
        "10.0.1.13",
        "in-VPC ClusterIP: the client's own address",
    );
    both(
        eventually(outside, "http://200.0.0.100/", 16),
        "200.0.0.50",
        "outside -> EIP: the real client address",
    );
    both(
        eventually(&pods["client-b"], "http://10.96.0.100/", 16),
        "100.66.0.2",
        "cross-VPC: the service gateway's address",
    );
    // ... and tenant-b cannot reach the backends directly: VPCs stay isolated.
    assert!(
        pods["client-b"]
            .http_get("http://10.0.1.11:8080/", Duration::from_secs(2))
            .is_err(),
        "tenant-b reached a tenant-a pod directly"
    );
    // Hairpin: a backend reaching its own service sees the VIP as the source.
    let seen = eventually(&pods["web-1"], "http://10.96.0.100/", 12);
    assert!(
        seen.iter()
            .all(|s| s.ends_with("from=10.96.0.100") || s.ends_with("from=10.0.1.11")),
        "{seen:?}"
    );
    assert!(
        seen.contains("web-1 from=10.96.0.100"),
        "hairpin to itself: {seen:?}"
    );
}

fn not_eligible(r: &Report) -> BTreeSet<&str> {
    r.flows
        .iter()
        .filter(|f| f.judged && !f.eligible)
        .flat_map(|f| f.reasons.iter().map(|x| x.rule))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_carries_real_traffic_and_its_flows_are_offloadable_only_in_offload_mode() {
    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
    let chassis = sb.chassis().to_owned();
    let (client, cache) = connect(&sb).await;

    // Two VPCs: tenant-a holds the service, tenant-b has a client allowed across VPCs.
    let vpc_a = Vpc {
        name: "tenant-a".into(),
        subnets: vec![Subnet {
            name: "a1".into(),
            cidrs: vec!["10.0.1.0/24".parse().unwrap()],
            gateways: vec![],
        }],
        join: None,
    };
    let vpc_b = Vpc {
        name: "tenant-b".into(),
        subnets: vec![Subnet {
            name: "b1".into(),
            cidrs: vec!["10.1.1.0/24".parse().unwrap()],
            gateways: vec![],
        }],
        join: None,
    };
    let ports = vec![
        port("tenant-a", "a1", "web-1", "0a:00:00:00:01:0b", "10.0.1.11"),
        port("tenant-a", "a1", "web-2", "0a:00:00:00:01:0c", "10.0.1.12"),
        port(
            "tenant-a",
            "a1",
            "client-a",
            "0a:00:00:00:01:0d",
            "10.0.1.13",
        ),
        port(
            "tenant-b",
            "b1",
            "client-b",
            "0a:00:00:00:02:0d",
            "10.1.1.13",
        ),
    ];
    let web = Service {
        namespace: "demo".into(),
        name: "web".into(),
        vpc: "tenant-a".into(),
        scenarios: Scenarios {
            cluster_ip: true,
            eip: true,
            cross_vpc: true,
        },
        cluster_ips: vec![ip("10.96.0.100")],
        eip: Some(ip("200.0.0.100")),
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            backends: vec![
                Backend {
                    ip: ip("10.0.1.11"),
                    port: 8080,
                    healthy: true,
                },
                Backend {
                    ip: ip("10.0.1.12"),
                    port: 8080,
                    healthy: true,
                },
            ],
        }],
        affinity_timeout: None,
        hash_fields: vec![],
    };
    let public = EipGateway {
        name: "public".into(),
        external: "200.0.0.1/24".parse().unwrap(),
        upstream: None,
        network_name: "external".into(),
        chassis: BTreeMap::from([(chassis.clone(), 10)]),
        transit: "100.65.0.0/24".parse().unwrap(),
    };
    let eip_a = EipAttachment {
        vpc: "tenant-a".into(),
        transit_ip: ip("100.65.0.2"),
        eips: BTreeSet::from([ip("200.0.0.100")]),
        egress: None,
    };
    let sgw_a = ServiceGatewayAttachment {
        vpc: "tenant-a".into(),
        transit: "100.66.0.0/29".parse().unwrap(),
        subnets: vec!["10.0.1.0/24".parse().unwrap()],
        client_vips: BTreeSet::new(),
    };
    let sgw_b = ServiceGatewayAttachment {
        vpc: "tenant-b".into(),
        transit: "100.66.0.8/29".parse().unwrap(),
        subnets: vec!["10.1.1.0/24".parse().unwrap()],
        client_vips: BTreeSet::from([ip("10.96.0.100")]),
    };

    let mut a = vpc_rows(&vpc_a, &ports).unwrap();
    add_eip_uplink(&mut a, &public, &eip_a).unwrap();
    add_svcgw_uplink(&mut a, &sgw_a).unwrap();
    let mut b = vpc_rows(&vpc_b, &ports).unwrap();
    add_svcgw_uplink(&mut b, &sgw_b).unwrap();
    let eipgw = eip_gateway_rows(&public, std::slice::from_ref(&eip_a)).unwrap();
    let sgw =
        service_gateway_rows(&BTreeMap::from([(chassis.clone(), 10)]), &[sgw_a, sgw_b]).unwrap();

    // Topology first (one transaction), then the service (another), as the controller does.
    let snap = cache.snapshot();
    let mut plan = Plan::new("t");
    plan_vpc(&snap, "tenant-a", Some(&a), &mut plan);
    plan_vpc(&snap, "tenant-b", Some(&b), &mut plan);
    plan_gateway(
        &snap,
        OwnerKind::EipGateway,
        "public",
        Some(&eipgw),
        &mut plan,
    );
    plan_gateway(
        &snap,
        OwnerKind::ServiceGateway,
        "cluster",
        Some(&sgw),
        &mut plan,
    );
    client
        .transact(&plan.ops)
        .await
        .expect("topology transaction");
    apply_service(&client, &cache, &web, DatapathMode::Default).await;

    // The pods' netns and veths (their LSPs are ours already: pod-add only binds them).
    let pods: BTreeMap<&str, Pod> = [
        ("web-1", "yc-subnet-a1", "10.0.1.1"),
        ("web-2", "yc-subnet-a1", "10.0.1.1"),
        ("client-a", "yc-subnet-a1", "10.0.1.1"),
        ("client-b", "yc-subnet-b1", "10.1.1.1"),
    ]
    .into_iter()
    .map(|(n, sw, gw)| {
        (
            n,
            pod(&sb, ports.iter().find(|p| p.name == n).unwrap(), sw, gw),
        )
    })
    .collect();
    let outside = sb
        .add_outside(&OutsideSpec {
            name: "outside",
            mac: "0a:00:00:c8:00:32",
            address: "200.0.0.50/24",
            gateway: Some("200.0.0.1"),
            mtu: None,
        })
        .expect("outside host");
    outside
        .exec(&["ip", "route", "add", "200.0.0.100/32", "via", "200.0.0.1"])
        .unwrap();
    let servers: Vec<_> = ["web-1", "web-2"]
        .iter()
        .map(|n| pods[n].http_server(n, 8080).expect("http server"))
        .collect();
    sb.wait_hv_sync().expect("hv sync");

    // A second plan over what is now in NB writes nothing: pod-add bound, did not change.
    let mut again = Plan::new("x");
    let snap = cache.snapshot();
    plan_vpc(&snap, "tenant-a", Some(&a), &mut again);
    plan_vpc(&snap, "tenant-b", Some(&b), &mut again);
    plan_gateway(
        &snap,
        OwnerKind::EipGateway,
        "public",
        Some(&eipgw),
        &mut again,
    );
    plan_gateway(
        &snap,
        OwnerKind::ServiceGateway,
        "cluster",
        Some(&sgw),
        &mut again,
    );
    let lbs = service_lbs(&web, DatapathMode::Default).unwrap();
    plan_service(&snap, "demo/web", &lbs, &mut again).unwrap();
    assert!(again.is_empty(), "second plan: {:?}", again.ops);

    // ---- DatapathMode::Default: the checker must fail, naming hash / dp_hash only.
    traffic(&sb, &pods, &outside);
    let report = check(&ovs(&sb), Scope::ServicePath).expect("check default mode");
    let table = report.render(true);
    eprintln!("default mode:\n{table}");
    assert!(!report.summary.ok, "default mode passed:\n{table}");
    assert_eq!(
        not_eligible(&report),
        BTreeSet::from(["action-hash", "match-dp-hash"]),
        "{table}"
    );
    assert!(!report.summary.dp_hash_groups.is_empty(), "{table}");

    // ---- DatapathMode::Offload: every service-path flow is eligible.
    apply_service(&client, &cache, &web, DatapathMode::Offload).await;
    sb.wait_hv_sync().expect("hv sync");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sb
        .ofctl(&["dump-groups", "br-int"])
        .unwrap()
        .contains("selection_method=dp_hash")
    {
        assert!(Instant::now() < deadline, "groups still use dp_hash");
        std::thread::sleep(Duration::from_millis(200));
    }
    traffic(&sb, &pods, &outside);
    let report = check(&ovs(&sb), Scope::ServicePath).expect("check offload mode");
    let table = report.render(true);
    eprintln!("offload mode:\n{table}");
    assert!(
        report.summary.ok,
        "offload mode is not offloadable:\n{table}"
    );
    assert_eq!(report.summary.judged_not_eligible, 0, "{table}");
    assert!(report.summary.judged >= 10, "{table}");
    let roles: BTreeSet<Role> = report.flows.iter().filter_map(|f| f.role).collect();
    assert!(
        roles.contains(&Role::Dnat) && roles.contains(&Role::Reply),
        "{table}"
    );
    // the only other not-eligible flows (if any) are not service traffic
    assert!(
        report.flows.iter().all(|f| f.eligible || !f.judged),
        "{table}"
    );

    // A VPC that is not allowed has no path to the service.
    let vpc_c = Vpc {
        name: "tenant-c".into(),
        subnets: vec![Subnet {
            name: "c1".into(),
            cidrs: vec!["10.2.1.0/24".parse().unwrap()],
            gateways: vec![],
        }],
        join: None,
    };
    let client_c = port(
        "tenant-c",
        "c1",
        "client-c",
        "0a:00:00:00:03:0d",
        "10.2.1.13",
    );
    let c = vpc_rows(&vpc_c, std::slice::from_ref(&client_c)).unwrap();
    let mut plan = Plan::new("c");
    plan_vpc(&cache.snapshot(), "tenant-c", Some(&c), &mut plan);
    client.transact(&plan.ops).await.expect("tenant-c");
    let client_c = pod(&sb, &client_c, "yc-subnet-c1", "10.2.1.1");
    sb.wait_hv_sync().expect("hv sync");
    assert!(
        client_c
            .http_get("http://10.96.0.100/", Duration::from_secs(2))
            .is_err(),
        "a VPC that is not allowed reached the service"
    );

    drop(client_c);
    drop(servers);
    drop(pods);
    drop(outside);
    client.close();
}
