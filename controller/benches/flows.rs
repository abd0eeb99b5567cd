//! `hack/bench.sh flows`: SB `Logical_Flow` rows per service as a VPC grows from 1 to 50
//! subnets, with the VPC's load-balancer group (what ycloud does) against the baseline of
//! attaching the load balancer to every switch directly (what CMSs did before groups), and
//! with `neighbor_responder` none (ours) against `all`. Real NB, SB and northd.
//!
//! Prints one JSON line per measurement and a table. `--quick`: 1 and 10 subnets only.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ycloud_controller::compiler::lb::service_lbs;
use ycloud_controller::compiler::nb;
use ycloud_controller::compiler::network::vpc_rows;
use ycloud_controller::compiler::plan::{Plan, plan_service, plan_vpc};
use ycloud_controller::compiler::topology::{
    Backend, DatapathMode, Protocol, Scenarios, Service, ServicePort, Subnet, Vpc,
};
use ycloud_ovsdb::cache::Cache;
use ycloud_ovsdb::{Client, ClientConfig};
use ycloud_testsupport::sandbox::{Sandbox, SandboxOptions};

const VIP: &str = "10.96.0.100";

fn vpc(subnets: usize) -> Vpc {
    Vpc {
        name: "bench".into(),
        subnets: (0..subnets)
            .map(|i| Subnet {
                name: format!("s{i}"),
                cidrs: vec![
                    format!("10.{}.{}.0/24", 1 + i / 250, i % 250)
                        .parse()
                        .unwrap(),
                ],
                gateways: vec![],
            })
            .collect(),
        join: None,
    }
}

fn service() -> Service {
    Service {
        namespace: "bench".into(),
        name: "web".into(),
        vpc: "bench".into(),
        scenarios: Scenarios {
            cluster_ip: true,
            ..Default::default()
        },
        cluster_ips: vec![VIP.parse::<IpAddr>().unwrap()],
        eip: None,
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            backends: (0..8)
                .map(|i| Backend {
                    ip: format!("10.1.0.{}", 10 + i).parse().unwrap(),
                    port: 8080,
                    healthy: true,
                })
                .collect(),
        }],
        affinity_timeout: None,
        hash_fields: vec![],
    }
}

/// Logical flows whose match mentions the VIP, and all logical flows.
fn lflows(sb: &Sandbox) -> (usize, usize) {
    let out = sb
        .sbctl(&["--bare", "--columns=match", "list", "Logical_Flow"])
        .expect("list Logical_Flow");
    let all: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    (all.iter().filter(|l| l.contains(VIP)).count(), all.len())
}

async fn apply(client: &Client, cache: &Cache, subnets: usize, grouped: bool, responder: &str) {
    let d = vpc_rows(&vpc(subnets), &[]).unwrap();
    let mut lbs = service_lbs(&service(), DatapathMode::Default).unwrap();
    lbs[0]
        .options
        .insert("neighbor_responder".into(), responder.into());
    let mut plan = Plan::new("v");
    plan_vpc(&cache.snapshot(), "bench", Some(&d), &mut plan);
    client.transact(&plan.ops).await.expect("vpc");
    let mut plan = Plan::new("s");
    plan_service(&cache.snapshot(), "bench/web", &lbs, &mut plan).expect("plan");
    client.transact(&plan.ops).await.expect("service");
    if !grouped {
        // The baseline: the LB on every switch, no group.
        let snap = cache.snapshot();
        let lb = snap
            .rows("Load_Balancer")
            .next()
            .map(|(u, _)| *u)
            .expect("lb");
        let mut ops = Vec::new();
        for (u, row) in snap.rows("Logical_Switch") {
            let _ = row;
            ops.push(ycloud_ovsdb::ops::update(
                "Logical_Switch",
                *u,
                ycloud_ovsdb::value::Row::from([(
                    "load_balancer_group".to_owned(),
                    ycloud_ovsdb::value::Value::empty_set(),
                )]),
            ));
            ops.push(ycloud_ovsdb::ops::set_insert(
                "Logical_Switch",
                *u,
                "load_balancer",
                [ycloud_ovsdb::value::Atom::Uuid(lb)],
            ));
        }
        client.transact(&ops).await.expect("direct attach");
    }
}

async fn clear(client: &Client, cache: &Cache) {
    let mut plan = Plan::new("d");
    let snap = cache.snapshot();
    plan_service(&snap, "bench/web", &[], &mut plan).unwrap();
    plan_vpc(&snap, "bench", None, &mut plan);
    client.transact(&plan.ops).await.expect("clear");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick { &[1, 10] } else { &[1, 10, 50] };
    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox");
    let (client, _ev) = Client::connect(ClientConfig::new(
        vec![sb.nb_unix().to_owned()],
        "OVN_Northbound",
    ))
    .await
    .expect("connect");
    let schema = Arc::new(client.get_schema("OVN_Northbound").await.expect("schema"));
    let cache = nb::cache(schema).expect("cache");
    client.monitor_cache(&cache).await.expect("monitor");

    let mut rows: Vec<(String, BTreeMap<&str, usize>, f64)> = Vec::new();
    for &n in sizes {
        let mut results = BTreeMap::new();
        let mut secs = 0.0;
        for (label, grouped, responder) in [
            ("group", true, "none"),
            ("direct", false, "none"),
            ("group+responder_all", true, "all"),
        ] {
            let t = Instant::now();
            apply(&client, &cache, n, grouped, responder).await;
            sb.nbctl(&["--wait=sb", "sync"]).expect("sync");
            secs += t.elapsed().as_secs_f64();
            let (vip_flows, all) = lflows(&sb);
            results.insert(label, vip_flows);
            println!(
                "{{\"name\":\"flows.lflows_per_service\",\"params\":{{\"subnets\":{n},\"attach\":\"{label}\"}},\"value\":{vip_flows},\"unit\":\"lflows\",\"total_lflows\":{all}}}"
            );
            clear(&client, &cache).await;
            sb.nbctl(&["--wait=sb", "sync"]).expect("sync");
        }
        let ratio = results["direct"] as f64 / results["group"].max(1) as f64;
        println!(
            "{{\"name\":\"flows.group_vs_direct\",\"params\":{{\"subnets\":{n}}},\"value\":{},\"unit\":\"lflows\",\"baseline\":{},\"ratio\":{ratio:.3}}}",
            results["group"], results["direct"]
        );
        rows.push((n.to_string(), results, secs));
    }
    println!();
    println!(
        "{:>8} | {:>14} | {:>15} | {:>12} | {:>22}",
        "subnets", "group (ycloud)", "direct (basel.)", "direct/group", "group, responder=all"
    );
    for (n, r, _) in &rows {
        println!(
            "{n:>8} | {:>14} | {:>15} | {:>12.2} | {:>22}",
            r["group"],
            r["direct"],
            r["direct"] as f64 / r["group"].max(1) as f64,
            r["group+responder_all"]
        );
    }
    client.close();
    drop(sb);
}
