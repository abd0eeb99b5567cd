//! The reconcile loop: on any change of the source, any change in NB (drift), and
//! periodically, rebuild the desired state of every owner and converge NB to it.
//!
//! One pass: read the objects → [`Resolver::resolve`] (addresses, backends, desired rows,
//! statuses) → plan every owner against the cache snapshot: topology owners (VPCs, EIP
//! gateways, the service gateway) first, then services, whose load balancers hang off the
//! topology. Owners that exist in NB but not in the source get an empty plan (their rows
//! are deleted); owners whose object is invalid are not planned at all (their rows stay).
//! The plans of a phase go in one transaction; if it fails, each owner is retried alone
//! so one bad owner can't block the rest. The pass at start is also the repair pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ycloud_ovsdb::cache::{Cache, Snapshot};
use ycloud_ovsdb::ops::Operation;
use ycloud_ovsdb::{Client, ClientConfig};

use crate::compiler::names::OwnerKind;
use crate::compiler::nb;
use crate::compiler::plan::{Plan, plan_gateway, plan_service, plan_vpc};
use crate::error::Error;
use crate::resolve::{self, Owner, Resolved, Resolver, owners_in_nb};
use crate::source::DirSource;
use crate::status::{Programming, StatusWriter};
use crate::store::Store;

/// What the loop needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub source_dir: PathBuf,
    pub status_dir: PathBuf,
    pub nb_remotes: Vec<String>,
    /// For `ssl:` remotes.
    pub nb_tls: Option<ycloud_ovsdb::transport::TlsConfig>,
    pub resolve: resolve::Config,
    /// How often the source directory is checked for changes.
    pub poll: Duration,
    /// A full pass at least this often, changes or not.
    pub resync: Duration,
}

/// Counters shared with the HTTP endpoints.
#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub load_errors: AtomicU64,
    pub object_errors: AtomicU64,
    pub nb_errors: AtomicU64,
    pub transactions: AtomicU64,
    pub txn_ops: AtomicU64,
    pub txn_bytes: AtomicU64,
    pub txn_micros: AtomicU64,
    pub objects: AtomicU64,
    pub nb_rows: AtomicU64,
    pub nb_connected: AtomicBool,
    pub synced: AtomicBool,
}

impl Metrics {
    /// The Prometheus text exposition of the counters.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let b = |a: &AtomicBool| u8::from(a.load(Ordering::Relaxed));
        format!(
            "# TYPE ycloud_reconciles_total counter\nycloud_reconciles_total {}\n\
             # TYPE ycloud_errors_total counter\n\
             ycloud_errors_total{{category=\"reconcile\"}} {}\n\
             ycloud_errors_total{{category=\"load\"}} {}\n\
             ycloud_errors_total{{category=\"object\"}} {}\n\
             ycloud_errors_total{{category=\"northbound\"}} {}\n\
             # TYPE ycloud_nb_transactions_total counter\nycloud_nb_transactions_total {}\n\
             # TYPE ycloud_nb_transaction_ops_total counter\nycloud_nb_transaction_ops_total {}\n\
             # TYPE ycloud_nb_transaction_bytes_total counter\nycloud_nb_transaction_bytes_total {}\n\
             # TYPE ycloud_nb_transaction_seconds_total counter\nycloud_nb_transaction_seconds_total {:.6}\n\
             # TYPE ycloud_objects gauge\nycloud_objects {}\n\
             # TYPE ycloud_nb_cache_rows gauge\nycloud_nb_cache_rows {}\n\
             # TYPE ycloud_nb_connected gauge\nycloud_nb_connected {}\n\
             # TYPE ycloud_synced gauge\nycloud_synced {}\n",
            g(&self.reconciles),
            g(&self.reconcile_errors),
            g(&self.load_errors),
            g(&self.object_errors),
            g(&self.nb_errors),
            g(&self.transactions),
            g(&self.txn_ops),
            g(&self.txn_bytes),
            g(&self.txn_micros) as f64 / 1e6,
            g(&self.objects),
            g(&self.nb_rows),
            b(&self.nb_connected),
            b(&self.synced),
        )
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub ops: usize,
    /// Owners whose transaction failed, with why.
    pub failed: BTreeMap<String, String>,
    /// Objects with a problem.
    pub problems: usize,
}

fn owner_label(o: &Owner) -> String {
    match o {
        Owner::Vpc(n) => format!("vpc {n}"),
        Owner::EipGateway(n) => format!("eip-gateway {n}"),
        Owner::ServiceGateway => "service-gateway".to_owned(),
        Owner::Service(n) => format!("service {n}"),
    }
}

fn op_bytes(ops: &[Operation]) -> usize {
    serde_json::to_vec(&ops.iter().map(Operation::to_json).collect::<Vec<_>>())
        .map(|v| v.len())
        .unwrap_or(0)
}

/// The plans of the topology owners: VPCs, EIP gateways, the service gateway.
pub fn plan_topology(snap: &Snapshot, r: &Resolved, in_nb: &BTreeSet<Owner>) -> Vec<(Owner, Plan)> {
    let mut out = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        Plan::new(format!("t{n}_"))
    };
    for (name, d) in &r.vpcs {
        let mut p = next();
        plan_vpc(snap, name, Some(d), &mut p);
        out.push((Owner::Vpc(name.clone()), p));
    }
    for (name, d) in &r.eip_gateways {
        let mut p = next();
        plan_gateway(snap, OwnerKind::EipGateway, name, Some(d), &mut p);
        out.push((Owner::EipGateway(name.clone()), p));
    }
    if let Some(d) = &r.service_gateway {
        let mut p = next();
        plan_gateway(snap, OwnerKind::ServiceGateway, "cluster", Some(d), &mut p);
        out.push((Owner::ServiceGateway, p));
    }
    // Owners in NB that nothing wants any more (and that are not kept as they are).
    for o in in_nb.iter().filter(|o| !r.keep.contains(*o)) {
        let mut p = next();
        match o {
            Owner::Vpc(name) if !r.vpcs.contains_key(name) => plan_vpc(snap, name, None, &mut p),
            Owner::EipGateway(name) if !r.eip_gateways.contains_key(name) => {
                plan_gateway(snap, OwnerKind::EipGateway, name, None, &mut p)
            }
            Owner::ServiceGateway if r.service_gateway.is_none() => {
                plan_gateway(snap, OwnerKind::ServiceGateway, "cluster", None, &mut p)
            }
            _ => continue,
        }
        out.push((o.clone(), p));
    }
    out
}

/// The plans of the services; an error is the owner's (transient: retried).
pub fn plan_services(
    snap: &Snapshot,
    r: &Resolved,
    in_nb: &BTreeSet<Owner>,
) -> Vec<(Owner, Result<Plan, String>)> {
    let mut out = Vec::new();
    for (i, (key, lbs)) in r.services.iter().enumerate() {
        let mut p = Plan::new(format!("s{i}_"));
        let res = plan_service(snap, key, lbs, &mut p).map(|()| p);
        out.push((Owner::Service(key.clone()), res.map_err(|e| e.to_string())));
    }
    for o in in_nb.iter().filter(|o| !r.keep.contains(*o)) {
        if let Owner::Service(key) = o
            && !r.services.contains_key(key)
        {
            let mut p = Plan::new(format!("d{}_", out.len()));
            let res = plan_service(snap, key, &[], &mut p).map(|()| p);
            out.push((o.clone(), res.map_err(|e| e.to_string())));
        }
    }
    out
}

/// The controller: NB client and cache, the source, the resolver, the status writer.
pub struct Controller {
    opts: Options,
    client: Client,
    cache: Cache,
    source: DirSource,
    store: Store,
    broken: BTreeSet<crate::store::ObjectRef>,
    load_errors: Vec<crate::store::LoadError>,
    resolver: Resolver,
    status: StatusWriter,
    metrics: Arc<Metrics>,
    passes: u64,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("source", &self.opts.source_dir)
            .field("passes", &self.passes)
            .finish()
    }
}

impl Controller {
    /// Connects to NB (retrying until it answers or `shutdown` fires) and loads the cache.
    pub async fn connect(opts: Options, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let mut config = ClientConfig::new(opts.nb_remotes.clone(), "OVN_Northbound");
        config.tls = opts.nb_tls.clone();
        let client = loop {
            match Client::connect(config.clone()).await {
                Ok((c, _events)) => break c,
                // A bad remote or TLS file won't fix itself.
                Err(
                    e @ (ycloud_ovsdb::Error::InvalidRemote { .. }
                    | ycloud_ovsdb::Error::TlsConfig { .. }),
                ) => {
                    return Err(Error::NbConfig(e));
                }
                Err(e) => {
                    tracing::warn!(error = %e, remotes = ?opts.nb_remotes, "NB not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let schema = Arc::new(
            client
                .get_schema("OVN_Northbound")
                .await
                .map_err(Error::Schema)?,
        );
        let cache = nb::cache(schema).map_err(Error::Cache)?;
        client.monitor_cache(&cache).await.map_err(Error::Monitor)?;
        metrics.nb_connected.store(true, Ordering::Relaxed);
        Ok(Controller {
            source: DirSource::new(&opts.source_dir),
            status: StatusWriter::new(&opts.status_dir),
            resolver: Resolver::new(opts.resolve.clone()),
            opts,
            client,
            cache,
            store: Store::default(),
            broken: BTreeSet::new(),
            load_errors: Vec::new(),
            metrics,
            passes: 0,
        })
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        let mut changes = self.cache.subscribe();
        let mut poll = tokio::time::interval(self.opts.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_pass = Instant::now();
        let mut dirty = true;
        let mut retry_at: Option<Instant> = None;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("shutting down");
                    break;
                }
                _ = poll.tick() => {}
                Some(_) = changes.recv() => {
                    // Drift (or our own writes echoed back): coalesce a burst into one pass.
                    while changes.try_recv().is_ok() {}
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while changes.try_recv().is_ok() {}
                    dirty = true;
                }
            }
            match self.source.poll() {
                Ok(Some(loaded)) => {
                    self.store = loaded.store;
                    self.broken = loaded.broken;
                    for e in &loaded.errors {
                        tracing::warn!(error = %e, "manifest not loaded");
                    }
                    self.metrics
                        .load_errors
                        .fetch_add(loaded.errors.len() as u64, Ordering::Relaxed);
                    self.load_errors = loaded.errors;
                    dirty = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(dir = %self.opts.source_dir.display(), error = %e, "reading the source directory");
                }
            }
            if last_pass.elapsed() >= self.opts.resync
                || retry_at.is_some_and(|t| Instant::now() >= t)
            {
                dirty = true;
            }
            if !dirty {
                continue;
            }
            dirty = false;
            last_pass = Instant::now();
            retry_at = None;
            let report = self.pass().await;
            if !report.failed.is_empty() {
                // Transient (NB down, an owner's attachment not there yet): retry soon.
                // Invalid objects are not failures here: they wait for a change.
                self.metrics
                    .reconcile_errors
                    .fetch_add(1, Ordering::Relaxed);
                retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
        self.client.close();
        Ok(())
    }

    /// Sends one phase's plans: together, and one by one if that fails.
    async fn apply(
        &self,
        plans: Vec<(Owner, Plan)>,
        results: &mut BTreeMap<Owner, Programming>,
    ) -> usize {
        let plans: Vec<(Owner, Plan)> = plans
            .into_iter()
            .filter(|(o, p)| {
                if p.is_empty() {
                    results.insert(o.clone(), programmed(o, p));
                }
                !p.is_empty()
            })
            .collect();
        if plans.is_empty() {
            return 0;
        }
        let all: Vec<Operation> = plans
            .iter()
            .flat_map(|(_, p)| p.ops.iter().cloned())
            .collect();
        if self.transact(&all).await.is_ok() {
            for (o, p) in &plans {
                results.insert(o.clone(), programmed(o, p));
            }
            return all.len();
        }
        let mut n = 0;
        for (o, p) in plans {
            match self.transact(&p.ops).await {
                Ok(()) => {
                    n += p.ops.len();
                    let done = programmed(&o, &p);
                    results.insert(o, done);
                }
                Err(e) => {
                    tracing::warn!(owner = %owner_label(&o), error = %e, "NB transaction failed");
                    results.insert(o, Programming::Failed(format!("NB transaction: {e}")));
                }
            }
        }
        n
    }

    async fn transact(&self, ops: &[Operation]) -> Result<(), ycloud_ovsdb::Error> {
        let started = Instant::now();
        let res = self.client.transact(ops).await;
        let m = &self.metrics;
        m.transactions.fetch_add(1, Ordering::Relaxed);
        m.txn_ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
        m.txn_bytes
            .fetch_add(op_bytes(ops) as u64, Ordering::Relaxed);
        m.txn_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if res.is_err() {
            m.nb_errors.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(
            ops = ops.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            ok = res.is_ok(),
            "NB transaction"
        );
        res.map(|_| ())
    }

    /// One reconcile pass.
    pub async fn pass(&mut self) -> PassReport {
        let started = Instant::now();
        self.passes += 1;
        self.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
        let snap = self.cache.snapshot();
        let resolved = self
            .resolver
            .resolve_with_broken(&self.store, &snap, &self.broken);
        let resolve_ms = started.elapsed().as_millis() as u64;
        let mut in_nb = owners_in_nb(&snap);
        let mut results: BTreeMap<Owner, Programming> = BTreeMap::new();
        let mut ops = self
            .apply(plan_topology(&snap, &resolved, &in_nb), &mut results)
            .await;

        // The services hang off what the topology phase just wrote: plan them on a fresh
        // snapshot.
        let snap = self.cache.snapshot();
        in_nb.extend(owners_in_nb(&snap));
        let mut plans = Vec::new();
        for (o, p) in plan_services(&snap, &resolved, &in_nb) {
            match p {
                Ok(p) => plans.push((o, p)),
                Err(e) => {
                    results.insert(o, Programming::Failed(e));
                }
            }
        }
        ops += self.apply(plans, &mut results).await;

        // Status.
        let mut report = PassReport {
            ops,
            ..Default::default()
        };
        for (o, r) in &results {
            if let Programming::Failed(m) = r {
                report.failed.insert(owner_label(o), m.clone());
            }
        }
        let status_started = Instant::now();
        self.status.begin();
        let mut statuses = resolved.status.clone();
        for e in &self.load_errors {
            if let Some(o) = &e.object {
                statuses.insert(
                    o.clone(),
                    resolve::ObjectStatus {
                        problem: Some(resolve::Problem {
                            reason: ycloud_crds::condition::reasons::INVALID_SPEC,
                            message: e.to_string(),
                        }),
                        owner: None,
                        fields: serde_json::json!({}),
                        backends: None,
                    },
                );
            }
        }
        report.problems = statuses.values().filter(|s| s.problem.is_some()).count();
        self.metrics
            .object_errors
            .store(report.problems as u64, Ordering::Relaxed);
        for (o, st) in &statuses {
            let programming = match &st.owner {
                None => Programming::Done,
                Some(owner) => results
                    .get(owner)
                    .cloned()
                    .unwrap_or(Programming::NotAttempted),
            };
            let generation = self.store.generation(o);
            if let Err(e) = self.status.write(o, st, &programming, generation) {
                tracing::warn!(object = %o, error = %e, "status not written");
            }
        }
        for (key, net) in &resolved.pod_networks {
            if let Err(e) = self.status.write_pod_network(key, net) {
                tracing::warn!(pod = %key, error = %e, "pod network file not written");
            }
        }
        for (node, doc) in &resolved.node_networks {
            if let Err(e) = self.status.write_node_network(node, doc) {
                tracing::warn!(node = %node, error = %e, "node management-port file not written");
            }
        }
        let summary = crate::status::summary(&statuses);
        let own = serde_json::json!({
            "synced": report.failed.is_empty(),
            "objects": self.store.len(),
            "problems": report.problems,
            "failedOwners": report.failed,
            "kinds": summary.iter().map(|(k, (n, bad))| (k.clone(), serde_json::json!({"objects": n, "problems": bad}))).collect::<serde_json::Map<_, _>>(),
        });
        let _ = self.status.write_own(
            "controller.yaml",
            &serde_yaml::to_string(&own).unwrap_or_default(),
        );
        if let Err(e) = self.status.finish() {
            tracing::warn!(error = %e, "pruning status files");
        }
        let snap = self.cache.snapshot();
        self.metrics
            .objects
            .store(self.store.len() as u64, Ordering::Relaxed);
        self.metrics.nb_rows.store(
            nb::TABLES.iter().map(|t| snap.len(t) as u64).sum(),
            Ordering::Relaxed,
        );
        if report.failed.is_empty() {
            self.metrics.synced.store(true, Ordering::Relaxed);
        }
        tracing::info!(
            pass = self.passes,
            ops = report.ops,
            failed = report.failed.len(),
            problems = report.problems,
            resolve_ms,
            status_ms = status_started.elapsed().as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
        report
    }
}

/// Done, unless the plan left rows alone because someone else holds their names.
fn programmed(o: &Owner, p: &Plan) -> Programming {
    if p.conflicts.is_empty() {
        Programming::Done
    } else {
        tracing::warn!(owner = %owner_label(o), conflicts = ?p.conflicts, "NB rows taken by others");
        Programming::Failed(p.conflicts.join("; "))
    }
}
