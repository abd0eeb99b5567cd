//! A free address of a VPC's service CIDR is refused at once, with real packets.
//!
//! A real OVN sandbox, two VPCs with the SAME service CIDR (10.96.0.0/16), a service in
//! tenant-a reachable from tenant-b through the service gateway, and the compiler's
//! service-CIDR reject ACLs (`network::add_service_reject`) on both. Asserted:
//! - live traffic is untouched: in-VPC ClusterIP, hairpin, and tenant-b's cross-VPC VIP
//!   (inside tenant-b's own service CIDR: the router's route to the service gateway
//!   excludes it from tenant-b's reject);
//! - a free address, an unused port of a live VIP, and the VIP after its service is
//!   deleted are refused (TCP RST: curl's "couldn't connect") in well under 100 ms;
//! - in offload mode every service-path datapath flow is still eligible for tc/flower,
//!   with refused connections in the same dump.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ycloud_controller::compiler::gateways::{
    ServiceGatewayAttachment, add_svcgw_uplink, service_gateway_rows,
};
use ycloud_controller::compiler::lb::{DesiredLb, service_lbs};
use ycloud_controller::compiler::names::OwnerKind;
use ycloud_controller::compiler::nb;
use ycloud_controller::compiler::network::{add_service_reject, vpc_rows};
use ycloud_controller::compiler::plan::{Plan, plan_gateway, plan_service, plan_vpc};
use ycloud_controller::compiler::topology::{
    Backend, DatapathMode, Port, PortOwner, Protocol, Scenarios, Service, ServicePort, Subnet, Vpc,
};
use ycloud_controller::offload::{OvsCtl, Scope, check};
use ycloud_ovsdb::cache::Cache;
use ycloud_ovsdb::{Client, ClientConfig};
use ycloud_testsupport::sandbox::{Pod, PodSpec, Sandbox, SandboxOptions};

const HTTP: Duration = Duration::from_secs(3);

/// What "at once" means here: the RST comes from ovn-controller on the client's own
/// node, so it is a few ms; 100 ms leaves room for a loaded CI machine.
const REFUSED_WITHIN: Duration = Duration::from_millis(100);

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

async fn apply_service(client: &Client, cache: &Cache, lbs: &[DesiredLb]) {
    let mut plan = Plan::new("s");
    plan_service(&cache.snapshot(), "demo/web", lbs, &mut plan).expect("plan service");
    if !plan.is_empty() {
        client
            .transact(&plan.ops)
            .await
            .expect("service transaction");
    }
}

/// One connection attempt with curl; (curl's exit code, curl's own time). 0 = answered,
/// 7 = refused (RST or ICMP unreachable), 28 = timed out.
fn attempt(from: &Pod, url: &str) -> (i32, Duration) {
    let script = format!(
        "curl -s -o /dev/null --noproxy '*' --max-time 2 -w '%{{time_total}}' {url}; echo \" $?\""
    );
    let out = from
        .exec(&["sh", "-c", &script])
        .unwrap_or_else(|e| panic!("curl from {}: {e}", from.name()));
    let mut it = out.split_whitespace();
    let secs: f64 = it.next().and_then(|t| t.parse().ok()).unwrap_or(f64::NAN);
    let code: i32 = it.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
    (code, Duration::from_secs_f64(secs))
}

/// The address is refused within [`REFUSED_WITHIN`]; flows land a moment after
/// `--wait=hv`, so a first slow answer is retried, bounded. Returns the time it took.
fn assert_refused(from: &Pod, url: &str) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, took) = attempt(from, url);
        if code == 7 && took < REFUSED_WITHIN {
            eprintln!("{url} from {}: refused in {took:?}", from.name());
            return took;
        }
        assert!(
            Instant::now() < deadline,
            "{url} from {}: curl exit {code} after {took:?} (want 7, refused, within {REFUSED_WITHIN:?})",
            from.name()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// GETs until one works (bounded); the bodies of `n` more.
fn answers(from: &Pod, url: &str, n: usize) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got: Result<BTreeSet<String>, String> = (0..n)
            .map(|_| {
                from.http_get(url, HTTP)
                    .map(|b| b.trim().to_owned())
                    .map_err(|e| format!("GET {url} from {}: {e}", from.name()))
            })
            .collect();
        match got {
            Ok(seen) => return seen,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_service_addresses_are_refused_at_once_and_live_services_and_offload_are_untouched() {
    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
    let chassis = sb.chassis().to_owned();
    let (client, cache) = connect(&sb).await;
    let service_cidr = ["10.96.0.0/16".parse().unwrap()];

    let vpc = |name: &str, subnet: &str, cidr: &str| Vpc {
        name: name.into(),
        subnets: vec![Subnet {
            name: subnet.into(),
            cidrs: vec![cidr.parse().unwrap()],
            gateways: vec![],
        }],
        join: None,
    };
    let (vpc_a, vpc_b) = (
        vpc("tenant-a", "a1", "10.0.1.0/24"),
        vpc("tenant-b", "b1", "10.1.1.0/24"),
    );
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
    let backend = |a: &str| Backend {
        ip: ip(a),
        port: 8080,
        healthy: true,
    };
    let web = Service {
        namespace: "demo".into(),
        name: "web".into(),
        vpc: "tenant-a".into(),
        scenarios: Scenarios {
            cluster_ip: true,
            eip: false,
            cross_vpc: true,
        },
        cluster_ips: vec![ip("10.96.0.100")],
        eip: None,
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            backends: vec![backend("10.0.1.11"), backend("10.0.1.12")],
        }],
        affinity_timeout: None,
        hash_fields: vec![],
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
    add_svcgw_uplink(&mut a, &sgw_a).unwrap();
    add_service_reject("tenant-a", &mut a, &service_cidr);
    let sgw_b_gone = ServiceGatewayAttachment {
        client_vips: BTreeSet::new(),
        ..sgw_b.clone()
    };
    let mut b = vpc_rows(&vpc_b, &ports).unwrap();
    add_svcgw_uplink(&mut b, &sgw_b).unwrap();
    add_service_reject("tenant-b", &mut b, &service_cidr);
    assert_eq!(
        b.acls.values().next().unwrap().match_,
        "ip4.dst == 10.96.0.0/16 && ip4.dst != {10.96.0.100}"
    );
    let sgw =
        service_gateway_rows(&BTreeMap::from([(chassis.clone(), 10)]), &[sgw_a, sgw_b]).unwrap();
    let snap = cache.snapshot();
    let mut plan = Plan::new("t");
    plan_vpc(&snap, "tenant-a", Some(&a), &mut plan);
    plan_vpc(&snap, "tenant-b", Some(&b), &mut plan);
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
    let lbs = service_lbs(&web, DatapathMode::Offload).unwrap();
    apply_service(&client, &cache, &lbs).await;

    let pods: BTreeMap<&str, Pod> = [
        ("web-1", "yc-subnet-a1", "10.0.1.1"),
        ("web-2", "yc-subnet-a1", "10.0.1.1"),
        ("client-a", "yc-subnet-a1", "10.0.1.1"),
        ("client-b", "yc-subnet-b1", "10.1.1.1"),
    ]
    .into_iter()
    .map(|(n, switch, gateway)| {
        let p = ports.iter().find(|p| p.name == n).unwrap();
        let address = format!("{}/24", p.ips[0]);
        let pod = sb
            .add_pod(&PodSpec {
                name: n,
                switch,
                mac: &p.mac,
                address: &address,
                gateway,
                mtu: None,
            })
            .unwrap_or_else(|e| panic!("pod {n}: {e}"));
        (n, pod)
    })
    .collect();
    let _servers: Vec<_> = ["web-1", "web-2"]
        .iter()
        .map(|n| pods[n].http_server(n, 8080).expect("http server"))
        .collect();
    sb.wait_hv_sync().expect("hv sync");

    // Live traffic first, from flows deleted, then refusals; one offload check over both.
    sb.appctl("ovs-vswitchd", &["dpctl/del-flows"]).unwrap();
    let both = |source: &str| -> BTreeSet<String> {
        ["web-1", "web-2"]
            .iter()
            .map(|b| format!("{b} from={source}"))
            .collect()
    };
    assert_eq!(
        answers(&pods["client-a"], "http://10.96.0.100/", 16),
        both("10.0.1.13"),
        "in-VPC ClusterIP"
    );
    assert_eq!(
        answers(&pods["client-b"], "http://10.96.0.100/", 16),
        both("100.66.0.2"),
        "cross-VPC VIP inside tenant-b's own service CIDR"
    );
    let hairpin = answers(&pods["web-1"], "http://10.96.0.100/", 12);
    assert!(hairpin.contains("web-1 from=10.96.0.100"), "{hairpin:?}");

    let mut took = vec![
        assert_refused(&pods["client-a"], "http://10.96.0.7/"),
        assert_refused(&pods["client-a"], "http://10.96.0.100:81/"),
        assert_refused(&pods["client-b"], "http://10.96.0.9/"),
        assert_refused(&pods["web-1"], "http://10.96.255.254:8080/"),
    ];
    // ... and the subnet's own addresses are not in the way: a backend is reached directly.
    assert_eq!(
        answers(&pods["client-a"], "http://10.0.1.12:8080/", 1),
        BTreeSet::from(["web-2 from=10.0.1.13".to_owned()])
    );

    let ovs = OvsCtl {
        rundir: Some(sb.env().get("OVS_RUNDIR").expect("OVS_RUNDIR").into()),
        vswitchd_ctl: None,
        bridge: "br-int".into(),
        netns: Some(sb.node_netns().to_owned()),
        timeout: Duration::from_secs(10),
    };
    // Live and refused connections in one dump: the only flows tc could not take are the
    // refusals' own (a packet-in to ovn-controller, which builds the RST: slow path by
    // nature, one per refused attempt, never a live connection's).
    let report = check(&ovs, Scope::ServicePath).expect("offload check");
    let table = report.render(true);
    for f in report.flows.iter().filter(|f| f.judged && !f.eligible) {
        assert!(
            f.actions.contains("userspace(pid=0,controller(")
                && f.reasons.iter().all(|r| r.rule == "action-userspace"),
            "a service flow other than a refusal is not offloadable:\n{table}"
        );
    }
    // Live traffic alone, from flows deleted: every service-path flow eligible.
    sb.appctl("ovs-vswitchd", &["dpctl/del-flows"]).unwrap();
    answers(&pods["client-a"], "http://10.96.0.100/", 16);
    answers(&pods["client-b"], "http://10.96.0.100/", 16);
    answers(&pods["web-1"], "http://10.96.0.100/", 12);
    let report = check(&ovs, Scope::ServicePath).expect("offload check");
    let table = report.render(true);
    assert!(
        report.summary.ok,
        "live service flows not offloadable:\n{table}"
    );
    assert_eq!(report.summary.judged_not_eligible, 0, "{table}");
    assert!(report.summary.judged >= 10, "{table}");

    // The service deleted: its VIP is a free address now, refused at once. As the
    // controller does, tenant-b's route to it goes too (and with it the exclusion).
    apply_service(&client, &cache, &[]).await;
    let mut b = vpc_rows(&vpc_b, &ports).unwrap();
    add_svcgw_uplink(&mut b, &sgw_b_gone).unwrap();
    add_service_reject("tenant-b", &mut b, &service_cidr);
    let mut plan = Plan::new("u");
    plan_vpc(&cache.snapshot(), "tenant-b", Some(&b), &mut plan);
    client.transact(&plan.ops).await.expect("tenant-b update");
    sb.wait_hv_sync().expect("hv sync");
    took.push(assert_refused(&pods["client-a"], "http://10.96.0.100/"));
    took.push(assert_refused(&pods["client-b"], "http://10.96.0.100/"));
    took.sort();
    eprintln!(
        "refusal times (curl time_total): min {:?}, median {:?}, max {:?}",
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
}
