//! Per-change replanning of services: plan only the services whose desired rows changed
//! since the last pass that reached NB, instead of diffing every service against the cache.
//!
//! Why: under backend churn a pass of 10,000 services spends most of its plan phase
//! proving that 9,999 services need nothing (docs/performance.md, churn). The desired rows
//! ([`DesiredLb`]) are plain data, so "did this service's rows change" is an equality test
//! against the last applied copy, and a service that did not change needs no plan as long
//! as NB has not drifted. Drift (someone else editing our rows) is still repaired by the
//! full pass, which the loop keeps for its periodic resync and for NB change events that
//! are not the echo of our own writes.
//!
//! How the reconcile loop uses it: a full pass (start, periodic resync, NB drift outside
//! the services' load balancers, a change that needs a full resolve) plans every service
//! with `plan_services` and records the result with [`Incremental::commit`]. A pass driven
//! by a change re-resolves only the services the change touches
//! ([`crate::resolve::Resolver::resolve_changes`]), plans those whose rows differ from the
//! last applied copy plus the services whose NB rows changed under us
//! ([`Incremental::plan_some`]), and records them ([`Incremental::commit_some`]). The
//! topology phase runs only in full passes, so a service's rows never need replanning
//! because the VPC's load-balancer group moved. `inc.reset()` after a reconnect that
//! reloaded the cache.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ycloud_ovsdb::cache::Snapshot;

use crate::compiler::lb::DesiredLb;
use crate::compiler::plan::{Plan, plan_service};
use crate::resolve::{Owner, Resolved};

/// The desired service rows last applied to NB.
#[derive(Debug, Default, Clone)]
pub struct Incremental {
    /// `None` until a first pass was committed: everything counts as changed. The rows
    /// are the resolution's own (`Arc`), not a copy.
    applied: Option<BTreeMap<String, Arc<[DesiredLb]>>>,
}

impl Incremental {
    pub fn new() -> Self {
        Incremental::default()
    }

    /// Forget what was applied: the next plan covers every service (a full pass).
    pub fn reset(&mut self) {
        self.applied = None;
    }

    /// Services to plan: desired rows added, changed or gone since the last commit, and
    /// services owned in NB that nothing wants any more. Owners kept as they are (invalid
    /// objects) are never planned.
    pub fn changed(&self, r: &Resolved, in_nb: &BTreeSet<Owner>) -> BTreeSet<String> {
        let kept = |k: &String| r.keep.contains(&Owner::Service(k.clone()));
        let mut out = BTreeSet::new();
        match &self.applied {
            None => out.extend(r.services.keys().cloned()),
            Some(applied) => {
                for (k, lbs) in &r.services {
                    if applied.get(k) != Some(lbs) {
                        out.insert(k.clone());
                    }
                }
                out.extend(
                    applied
                        .keys()
                        .filter(|k| !r.services.contains_key(*k))
                        .cloned(),
                );
            }
        }
        for o in in_nb {
            if let Owner::Service(k) = o
                && !r.services.contains_key(k)
            {
                out.insert(k.clone());
            }
        }
        out.retain(|k| !kept(k));
        out
    }

    /// The plans of the changed services only, in the shape of
    /// [`crate::reconcile::plan_services`] (same owners, same named-UUID prefixes scheme).
    pub fn plan(
        &self,
        snap: &Snapshot,
        r: &Resolved,
        in_nb: &BTreeSet<Owner>,
    ) -> Vec<(Owner, Result<Plan, String>)> {
        self.changed(r, in_nb)
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let mut p = Plan::new(format!("i{i}_"));
                let lbs = r.services.get(&key).map(|l| &l[..]).unwrap_or(&[]);
                let res = plan_service(snap, &key, lbs, &mut p).map(|()| p);
                (Owner::Service(key), res.map_err(|e| e.to_string()))
            })
            .collect()
    }

    /// Between full passes: the plans of the services among `keys` (re-resolved by the
    /// change) whose desired rows differ from the last applied copy, and of every service
    /// in `verify` (its rows changed in NB: the echo of our own write plans nothing, a
    /// drift is repaired). Services kept as they are are never planned.
    pub fn plan_some(
        &self,
        snap: &Snapshot,
        r: &Resolved,
        keys: &BTreeSet<String>,
        verify: &BTreeSet<String>,
    ) -> Vec<(Owner, Result<Plan, String>)> {
        let applied = self.applied.as_ref();
        keys.union(verify)
            .filter(|k| !r.keep.contains(&Owner::Service((*k).clone())))
            .filter(|k| {
                verify.contains(*k) || applied.and_then(|a| a.get(*k)) != r.services.get(*k)
            })
            .enumerate()
            .map(|(i, key)| {
                let mut p = Plan::new(format!("i{i}_"));
                let lbs = r.services.get(key).map(|l| &l[..]).unwrap_or(&[]);
                let res = plan_service(snap, key, lbs, &mut p).map(|()| p);
                (Owner::Service(key.clone()), res.map_err(|e| e.to_string()))
            })
            .collect()
    }

    /// [`Incremental::commit`] for `keys` only (what [`Incremental::plan_some`] covered):
    /// their rows as applied, a `failed` one forgotten so it is planned again.
    pub fn commit_some(&mut self, r: &Resolved, keys: &BTreeSet<String>, failed: &BTreeSet<Owner>) {
        let Some(applied) = &mut self.applied else {
            return;
        };
        for k in keys {
            let o = Owner::Service(k.clone());
            if failed.contains(&o) {
                applied.remove(k);
            } else if r.keep.contains(&o) {
                continue;
            } else if let Some(lbs) = r.services.get(k) {
                applied.insert(k.clone(), lbs.clone());
            } else {
                applied.remove(k);
            }
        }
    }

    /// Records what reached NB: every service of `r`, except `failed` owners (planned
    /// again next time). Owners kept as they are keep their last applied copy.
    pub fn commit(&mut self, r: &Resolved, failed: &BTreeSet<Owner>) {
        let mut next = BTreeMap::new();
        for (k, lbs) in &r.services {
            let o = Owner::Service(k.clone());
            if failed.contains(&o) {
                continue;
            }
            next.insert(k.clone(), lbs.clone());
        }
        if let Some(prev) = &self.applied {
            for (k, lbs) in prev {
                if r.keep.contains(&Owner::Service(k.clone())) {
                    next.insert(k.clone(), lbs.clone());
                }
            }
        }
        self.applied = Some(next);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use ycloud_ovsdb::cache::Cache;
    use ycloud_ovsdb::{Client, ClientConfig};
    use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

    use super::*;
    use crate::compiler::nb;
    use crate::reconcile::{plan_services, plan_topology};
    use crate::resolve::{Config, Resolver, owners_in_nb};
    use crate::store::Store;

    const TOPOLOGY: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: t}\n---\n\
        apiVersion: ycloud.io/v1alpha1\nkind: Vpc\nmetadata: {name: t}\n\
        spec: {serviceCIDRs: [10.96.0.0/16], namespaces: [t]}\n---\n\
        apiVersion: ycloud.io/v1alpha1\nkind: Subnet\nmetadata: {name: s0}\n\
        spec: {vpc: t, cidrBlocks: [10.16.0.0/16]}\n";

    /// A small deterministic generator (no dependency needed for a test's choices).
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) as usize) % n.max(1)
        }
    }

    /// Service name → (backend host numbers, has the second port).
    type Services = BTreeMap<usize, (Vec<usize>, bool)>;

    fn store_of(services: &Services) -> Store {
        let mut text = TOPOLOGY.to_owned();
        for (s, (backends, two_ports)) in services {
            text.push_str(&format!(
                "---\napiVersion: ycloud.io/v1alpha1\nkind: YusurService\n\
                 metadata: {{name: svc-{s}, namespace: t}}\nspec:\n  scenarios: [ClusterIP]\n  \
                 ports:\n  - {{name: http, protocol: TCP, port: 80, targetPort: 8080}}\n"
            ));
            if *two_ports {
                text.push_str("  - {name: dns, protocol: UDP, port: 53, targetPort: 53}\n");
            }
            text.push_str("  staticBackends:\n");
            for b in backends {
                text.push_str(&format!(
                    "  - {{address: 10.16.{}.{}}}\n",
                    b / 250,
                    b % 250 + 2
                ));
            }
        }
        let mut store = Store::default();
        let errors = store.load_yaml(Path::new("test.yaml"), &text);
        assert!(errors.is_empty(), "{errors:?}");
        store
    }

    async fn transact(client: &Client, plans: Vec<(Owner, Result<Plan, String>)>) -> usize {
        let ops: Vec<_> = plans
            .into_iter()
            .flat_map(|(o, p)| p.unwrap_or_else(|e| panic!("plan of {o:?}: {e}")).ops)
            .collect();
        if !ops.is_empty() {
            client.transact(&ops).await.expect("transact");
        }
        ops.len()
    }

    /// The topology phase of a full pass over `r` written to NB; the snapshot after it.
    async fn write_topology(client: &Client, cache: &Cache, r: &Resolved) -> Snapshot {
        let in_nb = owners_in_nb(&cache.snapshot());
        let topo: Vec<_> = plan_topology(&cache.snapshot(), r, &in_nb)
            .into_iter()
            .map(|(o, p)| (o, Ok(p)))
            .collect();
        transact(client, topo).await;
        cache.snapshot()
    }

    /// An empty NB, our client connected and its cache loaded (the server lives as long as
    /// the first value).
    async fn empty_nb() -> (OvsdbServer, Client, Cache) {
        let server = OvsdbServer::start(SchemaFile::Nb).expect("NB server");
        let (client, _events) = Client::connect(ClientConfig::new(
            vec![server.unix_remote()],
            "OVN_Northbound",
        ))
        .await
        .expect("connect");
        let schema = Arc::new(client.get_schema("OVN_Northbound").await.expect("schema"));
        let cache: Cache = nb::cache(schema).expect("cache");
        client.monitor_cache(&cache).await.expect("monitor");
        (server, client, cache)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn services_resolved_and_planned_on_several_threads_plan_as_one_thread_does_and_land_whole()
     {
        let (_server, client, cache) = empty_nb().await;
        // Above the thresholds of both (1,000): resolved and planned in parts.
        let n = 1_200;
        let services: Services = (0..n)
            .map(|s| (s, (vec![s % 300 + 1, s % 300 + 2], s % 2 == 0)))
            .collect();
        let store = store_of(&services);
        let mut resolver = Resolver::new(Config::default());
        let r = resolver.resolve(&store, &cache.snapshot());
        assert_eq!(r.services.len(), n, "every service resolved");
        let snap = write_topology(&client, &cache, &r).await;
        let plans = plan_services(&snap, &r, &owners_in_nb(&snap));
        let one_thread: Vec<String> = r
            .services
            .iter()
            .enumerate()
            .map(|(i, (key, lbs))| {
                let mut p = Plan::new(format!("s{i}_"));
                crate::compiler::plan::plan_service(&snap, key, lbs, &mut p).expect("plan");
                format!("{:?} {:?}", Owner::Service(key.clone()), p.ops)
            })
            .collect();
        let parts: Vec<String> = plans
            .iter()
            .map(|(o, p)| format!("{o:?} {:?}", p.as_ref().expect("plan").ops))
            .collect();
        assert!(parts == one_thread, "the plans differ from one thread's");
        transact(&client, plans).await;
        let snap = cache.snapshot();
        assert_eq!(
            snap.rows("Load_Balancer").count(),
            n + n / 2,
            "one LB per service and protocol"
        );
        let left = plan_services(&snap, &r, &owners_in_nb(&snap));
        assert!(
            left.iter()
                .all(|(_, p)| p.as_ref().is_ok_and(Plan::is_empty)),
            "a second pass has nothing to do"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replanning_only_changed_services_leaves_nb_exactly_as_a_full_pass_would() {
        let (_server, client, cache) = empty_nb().await;

        let mut rng = Lcg(11);
        let mut next_host = 0;
        let mut host = || {
            next_host += 1;
            next_host
        };
        let mut services: Services = (0..20)
            .map(|s| (s, ((0..4).map(|_| host()).collect(), s % 3 == 0)))
            .collect();
        let mut resolver = Resolver::new(Config::default());
        let mut inc = Incremental::new();

        // The first pass is a full one.
        let store = store_of(&services);
        let r = resolver.resolve(&store, &cache.snapshot());
        let snap = write_topology(&client, &cache, &r).await;
        transact(&client, plan_services(&snap, &r, &owners_in_nb(&snap))).await;
        inc.commit(&r, &BTreeSet::new());

        for step in 0..60 {
            // One random change: a backend replaced, added or removed, a port added or
            // removed, a service added or deleted; sometimes nothing.
            let keys: Vec<usize> = services.keys().copied().collect();
            let s = keys[rng.below(keys.len())];
            let what = rng.below(7);
            match what {
                0 | 1 => {
                    let b = services.get_mut(&s).expect("service");
                    let i = rng.below(b.0.len());
                    b.0[i] = host();
                }
                2 => services.get_mut(&s).expect("service").0.push(host()),
                3 if services[&s].0.len() > 1 => {
                    services.get_mut(&s).expect("service").0.pop();
                }
                4 => {
                    let b = services.get_mut(&s).expect("service");
                    b.1 = !b.1;
                }
                5 if services.len() > 5 => {
                    services.remove(&s);
                }
                5 | 6 => {
                    let new = services.keys().last().copied().unwrap_or(0) + 1 + rng.below(3);
                    services.insert(new, (vec![host(), host()], rng.below(2) == 0));
                }
                _ => {}
            }
            let store = store_of(&services);
            let snap = cache.snapshot();
            let r = resolver.resolve(&store, &snap);
            let in_nb = owners_in_nb(&snap);
            let changed = inc.changed(&r, &in_nb);
            assert!(
                changed.len() <= 1,
                "step {step} ({what}): one change made {changed:?} look changed"
            );
            transact(&client, inc.plan(&snap, &r, &in_nb)).await;
            inc.commit(&r, &BTreeSet::new());

            // A full pass now has nothing to do: the incremental result is the full one.
            let snap = cache.snapshot();
            let full = plan_services(&snap, &r, &owners_in_nb(&snap));
            let left: Vec<_> = full
                .iter()
                .filter(|(_, p)| p.as_ref().map(|p| !p.is_empty()).unwrap_or(true))
                .map(|(o, p)| format!("{o:?}: {:?}", p.as_ref().map(|p| &p.ops)))
                .collect();
            assert!(
                left.is_empty(),
                "step {step} ({what}): a full pass after the incremental one still plans {left:#?}"
            );
            assert_eq!(
                snap.rows("Load_Balancer").count(),
                services.len() + services.values().filter(|(_, two)| *two).count(),
                "step {step}: one LB per service and protocol"
            );
        }
        client.close();
    }
}
