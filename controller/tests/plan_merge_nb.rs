//! Merging the reference inserts of many service plans into one `mutate`
//! (`plan::merge_reference_inserts`) against a real OVN_Northbound ovsdb-server: the merged
//! transaction leaves NB exactly as the plans sent one by one do, a second pass writes
//! nothing, and an operation on the same row in between keeps its place.

use std::borrow::Cow;
use std::net::IpAddr;

use ycloud_controller::compiler::lb::{DesiredLb, service_lbs};
use ycloud_controller::compiler::names;
use ycloud_controller::compiler::plan::{Plan, merge_reference_inserts, plan_service};
use ycloud_controller::compiler::topology::{
    Backend, DatapathMode, Protocol, Scenarios, Service, ServicePort,
};
use ycloud_ovsdb::ops::{self, Operation};
use ycloud_ovsdb::value::Value;

const SERVICES: usize = 40;

#[path = "support/nb.rs"]
mod nb_support;

use nb_support::Nb;

impl Nb {
    /// A fresh NB holding only the VPC's load-balancer group (what the topology phase makes).
    async fn start_with_group() -> Nb {
        let nb = Nb::start().await;
        nb.nbctl(&[
            "create",
            "Load_Balancer_Group",
            &format!("name={}", names::vpc_lb_group("t")),
        ]);
        nb.wait_group().await;
        nb
    }

    async fn wait_group(&self) {
        for _ in 0..100 {
            if self.cache.snapshot().len("Load_Balancer_Group") == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the group never reached the cache");
    }

    /// One plan per service (as the reconcile loop makes them), against the cache.
    fn plans(&self) -> Vec<Plan> {
        let snap = self.cache.snapshot();
        services()
            .iter()
            .enumerate()
            .map(|(i, (owner, lbs))| {
                let mut p = Plan::new(format!("s{i}_"));
                plan_service(&snap, owner, lbs, &mut p).expect("plan service");
                p
            })
            .collect()
    }

    /// The group's load balancers by name, and every LB's name and VIPs, sorted.
    fn state(&self) -> (Vec<String>, Vec<String>) {
        let group = self.nbctl(&[
            "--bare",
            "--columns=load_balancer",
            "list",
            "Load_Balancer_Group",
        ]);
        let mut in_group: Vec<String> = group
            .split_whitespace()
            .map(|u| self.nbctl(&["--bare", "--columns=name", "list", "Load_Balancer", u]))
            .collect();
        in_group.sort();
        let lbs = self.nbctl(&[
            "--format=csv",
            "--data=bare",
            "--no-headings",
            "--columns=name,vips",
            "list",
            "Load_Balancer",
        ]);
        let mut rows: Vec<String> = lbs.lines().map(str::to_owned).collect();
        rows.sort();
        (in_group, rows)
    }
}

fn services() -> Vec<(String, Vec<DesiredLb>)> {
    (0..SERVICES)
        .map(|i| {
            let ip = |s: String| s.parse::<IpAddr>().expect("ip");
            let svc = Service {
                namespace: "bench".into(),
                name: format!("svc-{i}"),
                vpc: "t".into(),
                scenarios: Scenarios {
                    cluster_ip: true,
                    ..Default::default()
                },
                cluster_ips: vec![ip(format!("10.96.0.{}", i + 1))],
                eip: None,
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    backends: (0..4)
                        .map(|b| Backend {
                            ip: ip(format!("10.16.{i}.{}", b + 2)),
                            port: 8080,
                            healthy: true,
                        })
                        .collect(),
                }],
                affinity_timeout: None,
                hash_fields: vec![],
            };
            let lbs = service_lbs(&svc, DatapathMode::Default).expect("service lbs");
            (svc.key(), lbs)
        })
        .collect()
}

fn mutates_of(ops: &[Operation], table: &str) -> usize {
    ops.iter()
        .filter(|o| matches!(o, Operation::Mutate { table: t, .. } if t == table))
        .count()
}

#[tokio::test]
async fn merged_plans_leave_nb_as_the_plans_one_by_one_do_and_a_second_pass_writes_nothing() {
    // Reference: every plan in a transaction of its own.
    let one_by_one = Nb::start_with_group().await;
    for p in one_by_one.plans() {
        one_by_one.client.transact(&p.ops).await.expect("one plan");
    }
    let want = one_by_one.state();
    assert_eq!(want.0.len(), SERVICES, "every LB in the group: {want:?}");

    // Merged: one transaction, one mutate of the group.
    let merged = Nb::start_with_group().await;
    let all: Vec<Operation> = merged.plans().into_iter().flat_map(|p| p.ops).collect();
    assert_eq!(mutates_of(&all, "Load_Balancer_Group"), SERVICES);
    let ops: Vec<Operation> = merge_reference_inserts(&all)
        .into_iter()
        .map(Cow::into_owned)
        .collect();
    assert_eq!(mutates_of(&ops, "Load_Balancer_Group"), 1);
    assert_eq!(ops.len(), all.len() - (SERVICES - 1));
    merged.client.transact(&ops).await.expect("merged");
    assert_eq!(merged.state(), want, "merged vs one by one");

    // Nothing left to do.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let again: Vec<Operation> = merged.plans().into_iter().flat_map(|p| p.ops).collect();
    assert!(again.is_empty(), "a second pass writes {again:?}");
}

#[test]
fn an_operation_on_the_same_row_in_between_ends_a_merge() {
    let g = uuid::Uuid::new_v4();
    let other = uuid::Uuid::new_v4();
    let ins = |table: &str, u, name: &str| {
        ops::set_insert(
            table,
            u,
            "load_balancer",
            [Value::named_uuid(name).as_atom().cloned().expect("atom")],
        )
    };
    let ops = vec![
        ins("Load_Balancer_Group", g, "a"),
        ins("Logical_Router", other, "x"),
        ins("Load_Balancer_Group", g, "b"),
        // Deletes from the same row: a, b must be inserted before it, c after.
        ops::set_delete(
            "Load_Balancer_Group",
            g,
            "load_balancer",
            [uuid::Uuid::new_v4()],
        ),
        ins("Load_Balancer_Group", g, "c"),
        ins("Logical_Router", other, "y"),
    ];
    let merged = merge_reference_inserts(&ops);
    // Only a merged mutate is a new operation; the others are the plans' own.
    let borrowed: Vec<bool> = merged
        .iter()
        .map(|op| matches!(op, Cow::Borrowed(_)))
        .collect();
    assert_eq!(borrowed, [false, true, true, false]);
    let merged: Vec<Operation> = merged.into_iter().map(Cow::into_owned).collect();
    let expect = vec![
        ops::set_insert(
            "Load_Balancer_Group",
            g,
            "load_balancer",
            ["a", "b"].map(|n| Value::named_uuid(n).as_atom().cloned().expect("atom")),
        ),
        ops[3].clone(),
        ins("Load_Balancer_Group", g, "c"),
        ops::set_insert(
            "Logical_Router",
            other,
            "load_balancer",
            ["x", "y"].map(|n| Value::named_uuid(n).as_atom().cloned().expect("atom")),
        ),
    ];
    assert_eq!(merged, expect);
}
