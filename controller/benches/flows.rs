//! `hack/bench.sh flows`: SB `Logical_Flow` rows and OpenFlow flows per service as a VPC
//! grows from 1 to 50 subnets, with the VPC's load-balancer group (what ycloud does) against
//! the baseline of attaching the load balancer to every switch directly (what CMSs did before
//! groups), and with `neighbor_responder` none (ours) against `all`. Real NB, SB, northd,
//! `ovn-controller` and OVS: every switch has a port bound on the sandbox's chassis (a node
//! with a pod in every subnet, the worst case), so `ovn-controller` installs each switch's
//! flows; the OpenFlow cost of the service is `br-int`'s flow count with it minus without.
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

/// The measured service's VIP (`0xa600064` as OVN loads it into a register); the first
/// service of the VPC has `FIRST_VIP`.
const VIP: &str = "10.96.0.100";
const FIRST_VIP: &str = "10.96.0.99";

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

fn service(name: &str, vip: &str) -> Service {
    Service {
        namespace: "bench".into(),
        name: name.into(),
        vpc: "bench".into(),
        scenarios: Scenarios {
            cluster_ip: true,
            ..Default::default()
        },
        cluster_ips: vec![vip.parse::<IpAddr>().unwrap()],
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

/// OpenFlow flows on the chassis' `br-int`, and those that name the VIP (as an address or
/// as the 32-bit value OVN loads into a register).
fn openflows(sb: &Sandbox) -> (usize, usize, BTreeMap<u32, isize>) {
    let out = sb.ofctl(&["dump-flows", "br-int"]).expect("dump-flows");
    let flows: Vec<&str> = out.lines().filter(|l| l.contains("actions=")).collect();
    let vip = flows
        .iter()
        .filter(|l| l.contains(VIP) || l.contains("0xa600064"))
        .count();
    let mut tables = BTreeMap::new();
    for l in &flows {
        let table = l
            .split_once("table=")
            .and_then(|(_, t)| t.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        *tables.entry(table).or_insert(0) += 1;
    }
    (vip, flows.len(), tables)
}

/// The VPC of `subnets` switches, each with one port bound on the sandbox's chassis: an
/// OVS internal interface `bp<i>` (made once, kept across cases) whose `iface-id` names the
/// switch's port `bench-p<i>`.
async fn apply_vpc(client: &Client, cache: &Cache, sb: &Sandbox, subnets: usize) {
    let d = vpc_rows(&vpc(subnets), &[]).unwrap();
    let mut plan = Plan::new("v");
    plan_vpc(&cache.snapshot(), "bench", Some(&d), &mut plan);
    client.transact(&plan.ops).await.expect("vpc");
    let switches = sb
        .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
        .expect("list switches");
    for (i, sw) in switches.split_whitespace().enumerate() {
        let (port, iface) = (format!("bench-p{i}"), format!("bp{i}"));
        sb.nbctl(&["lsp-add", sw, &port]).expect("lsp-add");
        sb.vsctl(&[
            "--may-exist",
            "add-port",
            "br-int",
            &iface,
            "--",
            "set",
            "Interface",
            &iface,
            "type=internal",
            &format!("external_ids:iface-id={port}"),
        ])
        .expect("add-port");
    }
    sb.nbctl(&["--wait=hv", "sync"]).expect("hv sync");
}

async fn apply_service(
    client: &Client,
    cache: &Cache,
    (name, vip): (&str, &str),
    grouped: bool,
    responder: &str,
) {
    let mut lbs = service_lbs(&service(name, vip), DatapathMode::Default).unwrap();
    lbs[0]
        .options
        .insert("neighbor_responder".into(), responder.into());
    let mut plan = Plan::new("s");
    plan_service(&cache.snapshot(), &format!("bench/{name}"), &lbs, &mut plan).expect("plan");
    client.transact(&plan.ops).await.expect("service");
    if !grouped {
        // The baseline: the LB on every switch, no group.
        let snap = cache.snapshot();
        let lb = snap
            .rows("Load_Balancer")
            .find(|(_, row)| {
                row.get("name")
                    .and_then(|v| v.as_atom())
                    .and_then(|a| a.as_str())
                    == Some(lbs[0].name.as_str())
            })
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
    plan_service(&snap, "bench/first", &[], &mut plan).unwrap();
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

    type Results<'a> = BTreeMap<&'a str, (usize, isize, isize)>;
    let mut rows: Vec<(String, Results, f64)> = Vec::new();
    for &n in sizes {
        let mut results = BTreeMap::new();
        let mut secs = 0.0;
        for (label, grouped, responder) in [
            ("group", true, "none"),
            ("direct", false, "none"),
            ("group+responder_all", true, "all"),
        ] {
            apply_vpc(&client, &cache, &sb, n).await;
            // The VPC's first load balancer also turns on the switches' stateful stages
            // (every IP packet through conntrack): a per-switch cost paid once, measured
            // apart from the per-service one.
            let (_, of_empty, _) = openflows(&sb);
            apply_service(&client, &cache, ("first", FIRST_VIP), grouped, responder).await;
            sb.nbctl(&["--wait=hv", "sync"]).expect("hv sync");
            let (_, of_before, tables_before) = openflows(&sb);
            let of_first = of_before as isize - of_empty as isize;
            let t = Instant::now();
            apply_service(&client, &cache, ("web", VIP), grouped, responder).await;
            sb.nbctl(&["--wait=hv", "sync"]).expect("hv sync");
            secs += t.elapsed().as_secs_f64();
            let (vip_flows, all) = lflows(&sb);
            let (of_vip, of_after, mut by_table) = openflows(&sb);
            let of_delta = of_after as isize - of_before as isize;
            for (t, c) in tables_before {
                *by_table.entry(t).or_insert(0) -= c;
            }
            by_table.retain(|_, c| *c != 0);
            let by_table = by_table
                .iter()
                .map(|(t, c)| format!("\"{t}\":{c}"))
                .collect::<Vec<_>>()
                .join(",");
            results.insert(label, (vip_flows, of_delta, of_first));
            println!(
                "{{\"name\":\"flows.lflows_per_service\",\"params\":{{\"subnets\":{n},\"attach\":\"{label}\"}},\"value\":{vip_flows},\"unit\":\"lflows\",\"total_lflows\":{all}}}"
            );
            println!(
                "{{\"name\":\"flows.openflows_per_service\",\"params\":{{\"subnets\":{n},\"attach\":\"{label}\",\"local_switches\":{n}}},\"value\":{of_delta},\"unit\":\"openflow flows\",\"first_service\":{of_first},\"naming_vip\":{of_vip},\"total_openflows\":{of_after},\"by_table\":{{{by_table}}}}}"
            );
            clear(&client, &cache).await;
            sb.nbctl(&["--wait=hv", "sync"]).expect("sync");
        }
        let ratio = results["direct"].0 as f64 / results["group"].0.max(1) as f64;
        println!(
            "{{\"name\":\"flows.group_vs_direct\",\"params\":{{\"subnets\":{n}}},\"value\":{},\"unit\":\"lflows\",\"baseline\":{},\"ratio\":{ratio:.3}}}",
            results["group"].0, results["direct"].0
        );
        let ratio = results["direct"].1 as f64 / results["group"].1.max(1) as f64;
        println!(
            "{{\"name\":\"flows.openflow_group_vs_direct\",\"params\":{{\"subnets\":{n}}},\"value\":{},\"unit\":\"openflow flows\",\"baseline\":{},\"ratio\":{ratio:.3}}}",
            results["group"].1, results["direct"].1
        );
        rows.push((n.to_string(), results, secs));
    }
    println!();
    println!(
        "per service: SB logical flows / OpenFlow flows on the chassis, all switches local \
         (the VPC's first service: OpenFlow flows)"
    );
    println!(
        "{:>8} | {:>16} | {:>16} | {:>12} | {:>22}",
        "subnets", "group (ycloud)", "direct (basel.)", "direct/group", "group, responder=all"
    );
    for (n, r, _) in &rows {
        let cell = |k: &str| format!("{} / {} ({})", r[k].0, r[k].1, r[k].2);
        println!(
            "{n:>8} | {:>16} | {:>16} | {:>12.2} | {:>22}",
            cell("group"),
            cell("direct"),
            r["direct"].1 as f64 / r["group"].1.max(1) as f64,
            cell("group+responder_all")
        );
    }
    client.close();
    drop(sb);
}
