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
//!
//! Only the source and the sink differ between the modes: [`Source::Dir`] (a manifest
//! directory) or `Source::Kube` (reflectors, feature `kube`) fill the same [`Store`];
//! [`StatusSink::Files`] or `StatusSink::Api` take the same statuses. A [`WriteGate`]
//! (the Lease in cluster mode) says whether this replica may write at all.

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
use crate::source::{DirSource, Loaded};
use crate::status::{Programming, StatusWriter};
use crate::store::{ObjectRef, Store};

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

/// Whether this replica may write to NB and the API server now: always in manifest mode,
/// only while it holds the Lease in cluster mode. Checked before every write, so a leader
/// that loses its lease stops writing at once, in the middle of a pass too.
#[derive(Clone, Default)]
pub struct WriteGate(Option<Arc<dyn Fn() -> bool + Send + Sync>>);

impl WriteGate {
    /// Always open.
    pub fn always() -> Self {
        WriteGate(None)
    }

    /// Open while `f` says so.
    pub fn new(f: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        WriteGate(Some(Arc::new(f)))
    }

    pub fn is_open(&self) -> bool {
        self.0.as_ref().is_none_or(|f| f())
    }
}

impl std::fmt::Debug for WriteGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteGate(open: {})", self.is_open())
    }
}

/// Where the objects come from.
#[derive(Debug)]
pub enum Source {
    /// A manifest directory, polled.
    Dir(DirSource),
    /// The API server's reflectors.
    #[cfg(feature = "kube")]
    Kube(Box<crate::kube::source::KubeSource>),
}

/// Where status goes.
#[derive(Debug)]
pub enum StatusSink {
    /// Status files (manifest mode).
    Files(StatusWriter),
    /// The API server: status subresources, annotations, finalizers, events.
    #[cfg(feature = "kube")]
    Api(Box<crate::kube::sink::ApiSink>),
}

/// A problem of an object found while reading the source (it does not parse).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SourceProblem {
    object: ObjectRef,
    message: String,
}

/// The retry delay after a pass that failed transiently (NB down, an API conflict):
/// doubling from `first` to `max`, back to `first` after a pass that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay before the next retry (and doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(16))
    }
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
    /// This replica may write (always in manifest mode; the Lease holder in cluster mode).
    pub leader: AtomicBool,
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
             # TYPE ycloud_synced gauge\nycloud_synced {}\n\
             # TYPE ycloud_leader gauge\nycloud_leader {}\n",
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
            b(&self.leader),
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
    /// Nothing was done: this replica may not write (not the leader).
    pub skipped: bool,
}

impl PassReport {
    /// Whether the pass should be retried (after a backoff): something failed that may
    /// work next time. Invalid objects are not failures: they wait for a change.
    pub fn needs_retry(&self) -> bool {
        !self.failed.is_empty()
    }
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

/// The controller: NB client and cache, the source, the resolver, the status sink.
pub struct Controller {
    opts: Options,
    client: Client,
    cache: Cache,
    source: Source,
    store: Store,
    broken: BTreeSet<ObjectRef>,
    problems: Vec<SourceProblem>,
    resolver: Resolver,
    sink: StatusSink,
    gate: WriteGate,
    metrics: Arc<Metrics>,
    passes: u64,
    backoff: Backoff,
    /// NetworkProbe files (owned by probe-ctl; see `probe_hooks`).
    probes: crate::probes::ProbeFiles,
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
    /// Connects to NB (retrying until it answers or `shutdown` fires) and loads the cache;
    /// manifest mode (the directory and status files of `opts`).
    pub async fn connect(opts: Options, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let source = Source::Dir(DirSource::new(&opts.source_dir));
        let sink = StatusSink::Files(StatusWriter::new(&opts.status_dir));
        Self::connect_with(opts, metrics, source, sink, WriteGate::always()).await
    }

    /// [`Controller::connect`] with any source, sink and gate (cluster mode, tests).
    pub async fn connect_with(
        opts: Options,
        metrics: Arc<Metrics>,
        source: Source,
        sink: StatusSink,
        gate: WriteGate,
    ) -> Result<Self, Error> {
        let mut config = ClientConfig::new(opts.nb_remotes.clone(), "OVN_Northbound");
        config.tls = opts.nb_tls.clone();
        let client = loop {
            match Client::connect(config.clone()).await {
                Ok((c, events)) => {
                    track_connection(events, metrics.clone());
                    break c;
                }
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
        let opts_status_dir = opts.status_dir.clone();
        Ok(Controller {
            source,
            sink,
            gate,
            resolver: Resolver::new(opts.resolve.clone()),
            opts,
            client,
            cache,
            store: Store::default(),
            broken: BTreeSet::new(),
            problems: Vec::new(),
            metrics,
            passes: 0,
            backoff: Backoff::default(),
            probes: crate::probes::ProbeFiles::new(&opts_status_dir),
        })
    }

    /// The source (cluster mode: feed a manual source in tests).
    pub fn source_mut(&mut self) -> &mut Source {
        &mut self.source
    }

    /// The sink (cluster mode: its request and event counters).
    pub fn sink(&self) -> &StatusSink {
        &self.sink
    }

    /// Reads the source when it changed. Returns whether it did.
    pub fn refresh(&mut self) -> bool {
        match &mut self.source {
            Source::Dir(dir) => match dir.poll() {
                Ok(Some(loaded)) => {
                    self.take_loaded(loaded);
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    tracing::error!(dir = %self.opts.source_dir.display(), error = %e, "reading the source directory");
                    false
                }
            },
            #[cfg(feature = "kube")]
            Source::Kube(k) => {
                let Some(read) = k.poll() else {
                    return false;
                };
                self.metrics
                    .load_errors
                    .fetch_add(read.problems.len() as u64, Ordering::Relaxed);
                self.store = read.store;
                self.broken = read.broken;
                self.problems = read
                    .problems
                    .into_iter()
                    .filter_map(|(o, message)| {
                        Some(SourceProblem {
                            object: o?,
                            message,
                        })
                    })
                    .collect();
                true
            }
        }
    }

    fn take_loaded(&mut self, loaded: Loaded) {
        self.store = loaded.store;
        self.broken = loaded.broken;
        for e in &loaded.errors {
            tracing::warn!(error = %e, "manifest not loaded");
        }
        self.metrics
            .load_errors
            .fetch_add(loaded.errors.len() as u64, Ordering::Relaxed);
        self.problems = loaded
            .errors
            .iter()
            .filter_map(|e| {
                Some(SourceProblem {
                    object: e.object.clone()?,
                    message: e.to_string(),
                })
            })
            .collect();
    }

    /// Whether the source has read everything once (cluster mode: every reflector synced).
    fn source_synced(&self) -> bool {
        match &self.source {
            Source::Dir(_) => true,
            #[cfg(feature = "kube")]
            Source::Kube(k) => k.is_synced(),
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.source, Source::Dir(_))
    }

    /// Resolves when the source may have changed (the directory is polled instead).
    async fn source_changed(&self) {
        match &self.source {
            Source::Dir(_) => std::future::pending().await,
            #[cfg(feature = "kube")]
            Source::Kube(k) => k.changed().await,
        }
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
        let mut was_open = self.gate.is_open();
        // A probe verdict must reach the VIP map fast, not at the next source poll (probe-ctl).
        // Cluster mode gets verdicts from NetworkProbe watches: no files to poll.
        let probe_verdicts = if self.is_dir() {
            self.watch_probe_verdicts()
        } else {
            Arc::new(tokio::sync::Notify::new())
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("shutting down");
                    break;
                }
                _ = poll.tick() => {}
                () = probe_verdicts.notified() => dirty = true,
                () = self.source_changed() => {
                    // A burst of watch events (a first list, a rollout) is one pass.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some(_) = changes.recv() => {
                    // Drift (or our own writes echoed back): coalesce a burst into one pass.
                    while changes.try_recv().is_ok() {}
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while changes.try_recv().is_ok() {}
                    dirty = true;
                }
            }
            if self.refresh() {
                dirty = true;
            }
            let open = self.gate.is_open();
            self.metrics.leader.store(open, Ordering::Relaxed);
            if open != was_open {
                // A new leader starts with a full (repair) pass.
                was_open = open;
                dirty |= open;
            }
            if !open {
                // A standby keeps its caches warm: ready once they are synced.
                let synced = self.source_synced();
                self.metrics.synced.store(synced, Ordering::Relaxed);
                continue;
            }
            if last_pass.elapsed() >= self.opts.resync
                || retry_at.is_some_and(|t| Instant::now() >= t)
            {
                dirty = true;
            }
            if !dirty || !self.source_synced() {
                continue;
            }
            dirty = false;
            last_pass = Instant::now();
            retry_at = None;
            let report = self.pass().await;
            if report.needs_retry() {
                // Transient (NB down, an API conflict, an owner's attachment not there
                // yet): retry after a growing delay. Invalid objects are not failures
                // here: they wait for a change.
                self.metrics
                    .reconcile_errors
                    .fetch_add(1, Ordering::Relaxed);
                let delay = self.backoff.next_delay();
                tracing::info!(retry_in_ms = delay.as_millis() as u64, failed = ?report.failed, "pass failed; retrying");
                retry_at = Some(Instant::now() + delay);
            } else if !report.skipped {
                self.backoff.reset();
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
        if !self.gate.is_open() {
            // Not the leader (or no longer): the transaction is not sent.
            return Err(ycloud_ovsdb::Error::NotConnected {
                reason: "not the leader".into(),
            });
        }
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

    /// One reconcile pass. Does nothing when this replica may not write.
    pub async fn pass(&mut self) -> PassReport {
        if !self.gate.is_open() {
            return PassReport {
                skipped: true,
                ..Default::default()
            };
        }
        let started = Instant::now();
        self.passes += 1;
        self.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
        let mut report = PassReport::default();
        let snap = self.cache.snapshot();
        let dir = self.is_dir();
        if dir {
            self.probes_before_resolve();
        }
        let resolved = self
            .resolver
            .resolve_with_broken(&self.store, &snap, &self.broken);
        if dir {
            self.probes_after_resolve(&resolved);
        }
        let resolve_ms = started.elapsed().as_millis() as u64;
        // Cluster mode: our finalizer goes on every NB owner before its rows are written,
        // so a deletion waits for their removal. (Rows never leak without it either: an
        // owner in NB that the source no longer has is deleted by the next pass.)
        #[cfg(feature = "kube")]
        self.add_finalizers(&mut report).await;
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
        report.ops = ops;
        for (o, r) in &results {
            if let Programming::Failed(m) = r {
                report.failed.insert(owner_label(o), m.clone());
            }
        }
        let status_started = Instant::now();
        let mut statuses = resolved.status.clone();
        for p in &self.problems {
            statuses.insert(
                p.object.clone(),
                resolve::ObjectStatus {
                    problem: Some(resolve::Problem {
                        reason: ycloud_crds::condition::reasons::INVALID_SPEC,
                        message: p.message.clone(),
                    }),
                    owner: None,
                    fields: serde_json::json!({}),
                    backends: None,
                },
            );
        }
        report.problems = statuses.values().filter(|s| s.problem.is_some()).count();
        self.metrics
            .object_errors
            .store(report.problems as u64, Ordering::Relaxed);
        let rows: Vec<StatusRow> = statuses
            .iter()
            .map(|(o, st)| {
                let programming = match &st.owner {
                    None => Programming::Done,
                    Some(owner) => results
                        .get(owner)
                        .cloned()
                        .unwrap_or(Programming::NotAttempted),
                };
                (o.clone(), st.clone(), programming, self.store.generation(o))
            })
            .collect();
        match &mut self.sink {
            StatusSink::Files(w) => {
                write_files(w, &rows, &resolved, &statuses, &report, self.store.len());
            }
            #[cfg(feature = "kube")]
            StatusSink::Api(_) => {
                self.write_api(&rows, &resolved, &mut report).await;
                self.remove_finalizers(&results, &in_nb, &mut report).await;
            }
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

/// One object's status inputs: what, its status, how its owner's transaction went, its
/// generation.
type StatusRow = (ObjectRef, resolve::ObjectStatus, Programming, Option<i64>);

/// Manifest mode: the status files, the pods' and nodes' files, `controller.yaml`, and the
/// removal of files of objects that are gone.
fn write_files(
    w: &mut StatusWriter,
    rows: &[StatusRow],
    resolved: &Resolved,
    statuses: &BTreeMap<ObjectRef, resolve::ObjectStatus>,
    report: &PassReport,
    objects: usize,
) {
    w.begin();
    for (o, st, programming, generation) in rows {
        if let Err(e) = w.write(o, st, programming, *generation) {
            tracing::warn!(object = %o, error = %e, "status not written");
        }
    }
    for (key, net) in &resolved.pod_networks {
        if let Err(e) = w.write_pod_network(key, net) {
            tracing::warn!(pod = %key, error = %e, "pod network file not written");
        }
    }
    for (node, doc) in &resolved.node_networks {
        if let Err(e) = w.write_node_network(node, doc) {
            tracing::warn!(node = %node, error = %e, "node management-port file not written");
        }
    }
    let summary = crate::status::summary(statuses);
    let own = serde_json::json!({
        "synced": report.failed.is_empty(),
        "objects": objects,
        "problems": report.problems,
        "failedOwners": report.failed,
        "kinds": summary.iter().map(|(k, (n, bad))| (k.clone(), serde_json::json!({"objects": n, "problems": bad}))).collect::<serde_json::Map<_, _>>(),
    });
    let _ = w.write_own(
        "controller.yaml",
        &serde_yaml::to_string(&own).unwrap_or_default(),
    );
    if let Err(e) = w.finish() {
        tracing::warn!(error = %e, "pruning status files");
    }
}

/// Cluster mode: the writes to the API server. A failed write is a transient failure of
/// the pass (retried with backoff); a write refused because this replica is no longer
/// the leader too (the next leader redoes it).
#[cfg(feature = "kube")]
impl Controller {
    async fn add_finalizers(&mut self, report: &mut PassReport) {
        let (Source::Kube(src), StatusSink::Api(api)) = (&self.source, &mut self.sink) else {
            return;
        };
        for o in src.needs_finalizer() {
            let Some(obj) = src.object(&o) else {
                continue;
            };
            if let Err(e) = api.finalizer(&o, obj, true).await {
                tracing::warn!(object = %o, error = %e, "finalizer not added");
                report.failed.insert(o.to_string(), e.to_string());
            }
        }
    }

    async fn write_api(
        &mut self,
        rows: &[StatusRow],
        resolved: &Resolved,
        report: &mut PassReport,
    ) {
        let (Source::Kube(src), StatusSink::Api(api)) = (&self.source, &mut self.sink) else {
            return;
        };
        for (o, st, programming, generation) in rows {
            if let Err(e) = api
                .status(o, st, programming, *generation, src.object(o))
                .await
            {
                tracing::warn!(object = %o, error = %e, "status not written");
                report.failed.insert(o.to_string(), e.to_string());
            }
        }
        for (key, net) in &resolved.pod_networks {
            let (ns, name) = key.split_once('/').unwrap_or(("", key));
            let pod = ObjectRef::new("Pod", Some(ns), name);
            if let Err(e) = api.pod_network(&pod, net, src.object(&pod)).await {
                tracing::warn!(%pod, error = %e, "pod network annotation not written");
                report.failed.insert(pod.to_string(), e.to_string());
            }
        }
        for (node, doc) in &resolved.node_networks {
            let node = ObjectRef::new("Node", None, node);
            if src.object(&node).is_none() {
                continue;
            }
            if let Err(e) = api.node_network(&node, doc, src.object(&node)).await {
                tracing::warn!(%node, error = %e, "node management-ports annotation not written");
                report.failed.insert(node.to_string(), e.to_string());
            }
        }
    }

    /// Removes our finalizer from objects being deleted once their owner's rows are gone
    /// from NB (or never were: cleanup of an object whose apply never ran is a no-op).
    async fn remove_finalizers(
        &mut self,
        results: &BTreeMap<Owner, Programming>,
        in_nb: &BTreeSet<Owner>,
        report: &mut PassReport,
    ) {
        let (Source::Kube(src), StatusSink::Api(api)) = (&self.source, &mut self.sink) else {
            return;
        };
        for o in src.deleting() {
            let Some(owner) = crate::kube::source::owner_of(&o) else {
                continue;
            };
            let gone = match results.get(&owner) {
                Some(Programming::Done) => true,
                Some(_) => false,
                None => !in_nb.contains(&owner),
            };
            let Some(obj) = src.object(&o) else {
                continue;
            };
            if !gone {
                continue;
            }
            match api.finalizer(&o, obj, false).await {
                Ok(_) => tracing::info!(object = %o, "NB rows removed; finalizer released"),
                Err(e) => {
                    tracing::warn!(object = %o, error = %e, "finalizer not removed");
                    report.failed.insert(o.to_string(), e.to_string());
                }
            }
        }
    }
}

// NetworkProbe hooks (owned by helper probe-ctl; the loop above is helper kube's: these
// are the only calls it makes into crate::probes).
impl Controller {
    /// Notified when a verdict file under `S/probe-status/` changes (polled every
    /// [`crate::probes::STATUS_POLL`]).
    fn watch_probe_verdicts(&self) -> Arc<tokio::sync::Notify> {
        crate::probes::watch_status(&self.opts.status_dir, crate::probes::STATUS_POLL)
    }

    /// Reads the verdicts and hands them to resolution through the store's probes.
    fn probes_before_resolve(&mut self) {
        self.probes.read_statuses();
        self.probes.inject(&mut self.store);
    }

    /// Writes the probes this pass wants to `S/probes/` for the node daemons.
    fn probes_after_resolve(&mut self, resolved: &Resolved) {
        let (report, errors) = self.probes.sync(&resolved.probes);
        for e in errors {
            tracing::warn!(error = %e, "probe file not written");
        }
        if report.written + report.removed > 0 {
            tracing::debug!(
                written = report.written,
                removed = report.removed,
                "probe files"
            );
        }
    }
}

/// Keeps `nb_connected` (and so `/readyz`) true only while the NB client has a connection.
fn track_connection(
    mut events: tokio::sync::mpsc::UnboundedReceiver<ycloud_ovsdb::client::Event>,
    metrics: Arc<Metrics>,
) {
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            match e {
                ycloud_ovsdb::client::Event::Connected { .. } => {
                    metrics.nb_connected.store(true, Ordering::Relaxed);
                }
                ycloud_ovsdb::client::Event::Disconnected { reason } => {
                    tracing::warn!(%reason, "NB connection lost");
                    metrics.nb_connected.store(false, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    });
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
