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
use crate::incremental::Incremental;
use crate::resolve::{self, Owner, Resolved, Resolver, owners_in_nb};
use crate::source::{Changes, DirSource};
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
    /// OVN_Southbound remotes watched (read only) for the service gateway's election;
    /// empty: no SB watch, the service gateway stays pinned (`crate::sbwatch`).
    pub sb_remotes: Vec<String>,
    pub resolve: resolve::Config,
    /// How often the source directory is checked for changes.
    pub poll: Duration,
    /// A full pass at least this often, changes or not.
    pub resync: Duration,
    /// BFD timers kept in `NB_Global` (gateway failover speed); unset ones are left alone.
    pub bfd: crate::compiler::gateways::BfdTimers,
    /// A full pass that inserts at least this many load balancers (or logical switch
    /// ports) defers their echo: see `Controller::defer_echo`. `usize::MAX`: never.
    pub defer_echo_min: usize,
    /// A full pass sends its services in transactions of this many (see
    /// [`SERVICES_PER_TRANSACTION`]). `usize::MAX`: all in one.
    pub services_per_transaction: usize,
}

/// [`Options::defer_echo_min`] by default: a cold start of 1,000 services and up (below,
/// the echo costs the server a few ms).
pub const DEFER_ECHO_MIN: usize = 1_000;

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

/// How long a burst of watch events is gathered into one pass (cluster mode).
const SOURCE_BURST: Duration = Duration::from_millis(5);

/// The service whose load balancer an NB change is about, if it is one of ours.
fn service_of_change(c: &ycloud_ovsdb::cache::Change) -> Option<String> {
    if c.table != "Load_Balancer" {
        return None;
    }
    let row = c.new.as_ref().or(c.old.as_ref())?;
    let ext = |k: &str| {
        row.get("external_ids")?
            .map_get(k)?
            .as_str()
            .map(str::to_owned)
    };
    (ext(crate::compiler::names::OWNER_KEY).as_deref() == Some(crate::compiler::names::OWNER_VALUE)
        && ext(crate::compiler::names::KIND_KEY).as_deref() == Some(OwnerKind::Service.as_str()))
    .then(|| ext(crate::compiler::names::NAME_KEY))
    .flatten()
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
    /// Passes that resolved and planned everything (the others followed a change).
    pub full_passes: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub load_errors: AtomicU64,
    pub object_errors: AtomicU64,
    pub nb_errors: AtomicU64,
    pub transactions: AtomicU64,
    pub txn_ops: AtomicU64,
    pub txn_bytes: AtomicU64,
    pub txn_micros: AtomicU64,
    /// Full passes that deferred the echo of the load balancers or logical switch ports they
    /// wrote (a cold start).
    pub deferred_echoes: AtomicU64,
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
             # TYPE ycloud_full_passes_total counter\nycloud_full_passes_total {}\n\
             # TYPE ycloud_errors_total counter\n\
             ycloud_errors_total{{category=\"reconcile\"}} {}\n\
             ycloud_errors_total{{category=\"load\"}} {}\n\
             ycloud_errors_total{{category=\"object\"}} {}\n\
             ycloud_errors_total{{category=\"northbound\"}} {}\n\
             # TYPE ycloud_nb_transactions_total counter\nycloud_nb_transactions_total {}\n\
             # TYPE ycloud_nb_transaction_ops_total counter\nycloud_nb_transaction_ops_total {}\n\
             # TYPE ycloud_nb_transaction_bytes_total counter\nycloud_nb_transaction_bytes_total {}\n\
             # TYPE ycloud_nb_transaction_seconds_total counter\nycloud_nb_transaction_seconds_total {:.6}\n\
             # TYPE ycloud_nb_deferred_echoes_total counter\nycloud_nb_deferred_echoes_total {}\n\
             # TYPE ycloud_objects gauge\nycloud_objects {}\n\
             # TYPE ycloud_nb_cache_rows gauge\nycloud_nb_cache_rows {}\n\
             # TYPE ycloud_nb_connected gauge\nycloud_nb_connected {}\n\
             # TYPE ycloud_synced gauge\nycloud_synced {}\n\
             # TYPE ycloud_leader gauge\nycloud_leader {}\n",
            g(&self.reconciles),
            g(&self.full_passes),
            g(&self.reconcile_errors),
            g(&self.load_errors),
            g(&self.object_errors),
            g(&self.nb_errors),
            g(&self.transactions),
            g(&self.txn_ops),
            g(&self.txn_bytes),
            g(&self.txn_micros) as f64 / 1e6,
            g(&self.deferred_echoes),
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

/// The size of `ops` as JSON, counted while encoding them into nothing (no JSON tree, no
/// buffer: a cold start's ops are ~10 MB).
fn op_bytes<O: std::borrow::Borrow<Operation>>(ops: &[O]) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    for op in ops {
        let _ = serde_json::to_writer(&mut c, op.borrow());
    }
    c.0
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

/// The plans of the services; an error is the owner's (transient: retried). From
/// [`PARALLEL_PLANS`] services on, planned on several threads (each plan reads only the
/// snapshot and its own service's rows), in key order.
pub fn plan_services(
    snap: &Snapshot,
    r: &Resolved,
    in_nb: &BTreeSet<Owner>,
) -> Vec<(Owner, Result<Plan, String>)> {
    let wanted: Vec<_> = r.services.iter().enumerate().collect();
    let mut out: Vec<(Owner, Result<Plan, String>)> = crate::par::map_chunks(
        &wanted,
        |_| 1,
        PARALLEL_PLANS,
        |chunk| {
            chunk
                .iter()
                .map(|(i, (key, lbs))| {
                    let mut p = Plan::new(format!("s{i}_"));
                    let res = plan_service(snap, key, lbs, &mut p).map(|()| p);
                    (
                        Owner::Service((*key).clone()),
                        res.map_err(|e| e.to_string()),
                    )
                })
                .collect::<Vec<_>>()
        },
    )
    .into_iter()
    .flatten()
    .collect();
    let gone = in_nb
        .iter()
        .filter(|o| !r.keep.contains(*o))
        .filter_map(|o| match o {
            Owner::Service(key) if !r.services.contains_key(key) => Some(key),
            _ => None,
        });
    for (i, key) in gone.enumerate() {
        let mut p = Plan::new(format!("d{i}_"));
        let res = plan_service(snap, key, &[], &mut p).map(|()| p);
        out.push((Owner::Service(key.clone()), res.map_err(|e| e.to_string())));
    }
    out
}

/// From this many services on, a full pass plans them on several threads.
const PARALLEL_PLANS: usize = 1_000;

/// The load balancers a full pass is about to insert: those of the services without rows
/// in NB (what decides whether their echo is deferred, see `Controller::defer_echo`).
fn new_lbs(r: &Resolved, in_nb: &BTreeSet<Owner>) -> usize {
    r.services
        .iter()
        .filter(|(key, _)| !in_nb.contains(&Owner::Service((*key).clone())))
        .map(|(_, lbs)| lbs.len())
        .sum()
}

/// The logical switch ports a full pass is about to insert, about: those its VPCs want
/// beyond the ones NB holds (what decides whether their echo is deferred, see
/// `Controller::defer_echo`).
fn new_lsps(r: &Resolved, snap: &Snapshot) -> usize {
    let wanted: usize = r
        .vpcs
        .values()
        .flat_map(|v| v.switches.values())
        .map(|s| s.ports.len())
        .sum();
    wanted.saturating_sub(snap.len("Logical_Switch_Port"))
}

/// [`Options::services_per_transaction`] by default. A full pass sends its services' rows
/// in transactions of this many services, each encoded and sent by a task of its own
/// (one by one only the services of a transaction that failed). Small transactions, not
/// one: NB commits the same 10,000 services' rows in ~0.3 s as 40 transactions but ~0.5 s
/// as one (docs/performance.md, "sync", session 6).
pub const SERVICES_PER_TRANSACTION: usize = 250;

/// The next wake-up of the manifest directory's watch; never, without one. A failed watch is
/// dropped (logged): the poll still finds every change, only later.
async fn next_dir_event(
    watch: &mut Option<crate::dirwatch::DirWatch>,
) -> Option<crate::dirwatch::Touched> {
    let Some(w) = watch else {
        return std::future::pending().await;
    };
    match w.changed().await {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "manifest directory watch failed; changes are found by the poll only");
            *watch = None;
            None
        }
    }
}

/// The next change of the gateway ports' holders that may call for a demotion; never,
/// without an SB watch.
async fn next_demotion(d: &mut Option<crate::demotions::Demotions>) {
    match d {
        Some(d) => d.changed().await,
        None => std::future::pending().await,
    }
}

/// What one wake-up of the loop reads of a watched manifest directory (see `run`).
enum DirRead {
    Nothing,
    Names(BTreeSet<std::ffi::OsString>),
    All,
}

/// The next chassis the SB watch says holds the service gateway's beacon. An unclaimed
/// beacon (`None`: between the release and the claim of a move, or every candidate dead)
/// is skipped: the gateway stays where it was rather than going back to the top chassis,
/// which may be the dead one. Never resolves without a watch, or once the watch ended.
async fn next_election(
    rx: &mut Option<tokio::sync::watch::Receiver<Option<String>>>,
) -> Option<String> {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Some(c) = rx.borrow_and_update().clone() {
            return Some(c);
        }
    }
}

/// The controller: NB client and cache, the source, the resolver, the status sink.
pub struct Controller {
    opts: Options,
    client: Client,
    /// The NB cache's monitor (its `Load_Balancer` condition is narrowed during a big write).
    monitor: ycloud_ovsdb::client::MonitorHandle,
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
    /// The service rows last applied (for passes driven by a change).
    inc: Incremental,
    /// The last pass's result, kept up to date by passes driven by a change.
    last: Option<Resolved>,
    /// Objects changed since the last pass.
    pending: BTreeSet<ObjectRef>,
    /// Services whose load balancers changed in NB since the last pass (our own writes
    /// echoed back, or someone else's drift): planned again against the cache.
    verify: BTreeSet<String>,
    /// The next pass is a full one.
    full: bool,
    /// Set when the NB client reconnected (its cache was reloaded).
    reconnected: Arc<AtomicBool>,
    /// `controller.yaml` still names failures of an earlier pass.
    summary_stale: bool,
    /// The SB watch's election of the service gateway's chassis (`--ovn-sb`).
    svcgw_election: Option<tokio::sync::watch::Receiver<Option<String>>>,
    /// The demotion of failed gateway chassis (`--ovn-sb`).
    demotions: Option<crate::demotions::Demotions>,
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
        let connect_started = Instant::now();
        let mut config = ClientConfig::new(opts.nb_remotes.clone(), "OVN_Northbound");
        config.tls = opts.nb_tls.clone();
        let reconnected = Arc::new(AtomicBool::new(false));
        let client = loop {
            match Client::connect(config.clone()).await {
                Ok((c, events)) => {
                    track_connection(events, metrics.clone(), reconnected.clone());
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
        // The client read the schema as it connected: no second request for it.
        let schema = match client.schema() {
            Some(schema) => schema,
            None => Arc::new(
                client
                    .get_schema("OVN_Northbound")
                    .await
                    .map_err(Error::Schema)?,
            ),
        };
        let cache = nb::cache(schema).map_err(Error::Cache)?;
        let monitor = client.monitor_cache(&cache).await.map_err(Error::Monitor)?;
        metrics.nb_connected.store(true, Ordering::Relaxed);
        tracing::debug!(
            elapsed_ms = connect_started.elapsed().as_millis() as u64,
            "connected to NB, schema read, cache loaded"
        );
        let opts_status_dir = opts.status_dir.clone();
        // Read-only, in a task of its own: SB being down never holds up NB programming.
        let svcgw_election = (!opts.sb_remotes.is_empty()).then(|| {
            crate::sbwatch::spawn(
                opts.sb_remotes.clone(),
                opts.nb_tls.clone(),
                crate::compiler::gateways::svcgw_beacon_cr_port(),
            )
        });
        // A connection of its own: the demotion watch reads every gateway port, the
        // election above one.
        let demotions = (!opts.sb_remotes.is_empty()).then(|| {
            crate::demotions::Demotions::spawn(
                opts.sb_remotes.clone(),
                opts.nb_tls.clone(),
                if opts.resolve.svcgw_failover {
                    opts.resolve.svcgw_chassis.clone()
                } else {
                    std::collections::BTreeMap::new()
                },
            )
        });
        if svcgw_election.is_none() && opts.resolve.svcgw_chassis.len() > 1 {
            tracing::info!(chassis = ?opts.resolve.svcgw_chassis, "no --ovn-sb: the service gateway is pinned to the highest-priority chassis; the others are not standbys");
        }
        Ok(Controller {
            svcgw_election,
            demotions,
            source,
            sink,
            gate,
            resolver: Resolver::new(opts.resolve.clone()),
            opts,
            client,
            monitor,
            cache,
            store: Store::default(),
            broken: BTreeSet::new(),
            problems: Vec::new(),
            metrics,
            passes: 0,
            backoff: Backoff::default(),
            probes: crate::probes::ProbeFiles::new(&opts_status_dir),
            inc: Incremental::new(),
            last: None,
            pending: BTreeSet::new(),
            verify: BTreeSet::new(),
            full: true,
            reconnected,
            summary_stale: false,
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

    /// Reads the source when it changed. Returns whether it did. The objects that changed
    /// are remembered for the next pass; a change whose extent is unknown (a first read,
    /// new or fixed source problems) makes it a full one.
    pub fn refresh(&mut self) -> bool {
        self.read_source(None)
    }

    /// [`Controller::refresh`]; in manifest mode, with `names`, only those files of the
    /// directory are read (what its watch saw change; see `DirSource::poll_names`).
    fn read_source(&mut self, names: Option<&BTreeSet<std::ffi::OsString>>) -> bool {
        let read_started = Instant::now();
        match &mut self.source {
            Source::Dir(dir) => match match names {
                Some(names) => dir.poll_names(&mut self.store, names),
                None => dir.poll_into(&mut self.store),
            } {
                Ok(Some(changes)) => {
                    tracing::debug!(
                        objects = self.store.len(),
                        changed = changes.objects.as_ref().map(BTreeSet::len),
                        elapsed_ms = read_started.elapsed().as_millis() as u64,
                        "read the source"
                    );
                    self.take_changes(changes);
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
                // The reflectors hand over a whole store: one comparison per object finds
                // what changed (far cheaper than resolving everything again).
                self.pending.extend(self.store.diff(&read.store));
                self.store = read.store;
                let problems: Vec<SourceProblem> = read
                    .problems
                    .into_iter()
                    .filter_map(|(o, message)| {
                        Some(SourceProblem {
                            object: o?,
                            message,
                        })
                    })
                    .collect();
                if read.broken != self.broken || problems != self.problems {
                    self.full = true;
                }
                self.broken = read.broken;
                self.problems = problems;
                true
            }
        }
    }

    fn take_changes(&mut self, changes: Changes) {
        for e in &changes.errors {
            tracing::warn!(error = %e, "manifest not loaded");
        }
        self.metrics
            .load_errors
            .fetch_add(changes.errors.len() as u64, Ordering::Relaxed);
        let problems: Vec<SourceProblem> = changes
            .errors
            .iter()
            .filter_map(|e| {
                Some(SourceProblem {
                    object: e.object.clone()?,
                    message: e.to_string(),
                })
            })
            .collect();
        match changes.objects {
            Some(objects) => self.pending.extend(objects),
            None => self.full = true,
        }
        if changes.broken != self.broken || problems != self.problems {
            self.full = true;
        }
        self.broken = changes.broken;
        self.problems = problems;
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

    /// An inotify watch on the manifest directory (manifest mode), so that an edit starts
    /// its pass at once; without one (inotify unavailable) the poll alone finds changes.
    fn watch_dir(&self) -> Option<crate::dirwatch::DirWatch> {
        // (The only source without the `kube` feature.)
        #[allow(irrefutable_let_patterns)]
        let Source::Dir(dir) = &self.source else {
            return None;
        };
        match crate::dirwatch::DirWatch::new(dir.dir()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.dir().display(), error = %e, "cannot watch the manifest directory; changes are found by the poll only");
                None
            }
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
        let probe_verdicts = self.watch_probe_verdicts();
        let mut election = self.svcgw_election.take();
        let mut demotions = self.demotions.take();
        let mut dir_watch = self.watch_dir();
        tokio::pin!(shutdown);
        loop {
            // With a live watch of the manifest directory, what to read of it: everything at
            // a poll (the safety net) or when the watch can't name the files, the files it
            // names when it wakes us, nothing on other wake-ups (NB echoes of our writes:
            // at 100 changes/s that was a listing of the directory 200 times a second).
            // Without a watch (or in cluster mode), the source is read at every wake-up.
            let mut dir_read = DirRead::Nothing;
            tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("shutting down");
                    break;
                }
                _ = poll.tick() => dir_read = DirRead::All,
                // A manifest was written: read it now, not at the next poll.
                Some(touched) = next_dir_event(&mut dir_watch) => {
                    dir_read = match touched {
                        crate::dirwatch::Touched::Names(names) => DirRead::Names(names),
                        crate::dirwatch::Touched::Unknown => DirRead::All,
                    };
                }
                // Only a changed verdict is worth a pass, not a periodic status rewrite.
                () = probe_verdicts.notified() => dirty |= self.probe_verdicts_changed(),
                () = self.source_changed() => {
                    // A burst of watch events (a rollout) is one pass: each read of the
                    // reflectors costs a comparison of every object, so wait a moment for
                    // the rest of the burst (a first list needs no wait: no pass runs
                    // before every reflector has listed).
                    tokio::time::sleep(SOURCE_BURST).await;
                }
                Some(chassis) = next_election(&mut election) => {
                    // OVN moved the service gateway's beacon: pin the gateway router there
                    // (one NB update of `options:chassis`, by a full pass).
                    if self.resolver.config.svcgw_elected.as_ref() != Some(&chassis) {
                        tracing::info!(from = ?self.resolver.config.svcgw_elected, to = %chassis, "service gateway: re-pinning to the chassis OVN elected");
                        self.resolver.config.svcgw_elected = Some(chassis);
                        self.full = true;
                        dirty = true;
                    }
                }
                // SB moved a gateway port, or a holder has now held it long enough: the
                // demotions are decided again below.
                () = next_demotion(&mut demotions) => {}
                Some(first) = changes.recv() => {
                    // NB changed: a service's load balancer (our own write echoed back, or
                    // someone else's edit) is planned again on its own; anything else is
                    // drift of the topology (or our topology writes echoed back): a full
                    // pass. No wait: whatever came in the same burst is already queued.
                    self.note_nb_change(&first);
                    while let Ok(c) = changes.try_recv() {
                        self.note_nb_change(&c);
                    }
                    dirty = true;
                }
            }
            if self.reconnected.swap(false, Ordering::Relaxed) {
                // The cache was reloaded: what it says we applied may not hold any more.
                self.inc.reset();
                self.full = true;
                dirty = true;
            }
            let read = match dir_read {
                _ if dir_watch.is_none() || !self.is_dir() => self.refresh(),
                DirRead::All => self.refresh(),
                DirRead::Names(names) => self.read_source(Some(&names)),
                DirRead::Nothing => false,
            };
            if read {
                dirty = true;
            }
            let open = self.gate.is_open();
            self.metrics.leader.store(open, Ordering::Relaxed);
            if open != was_open {
                // A new leader starts with a full (repair) pass.
                was_open = open;
                dirty |= open;
                self.full |= open;
            }
            if !open {
                // A standby keeps its caches warm: ready once they are synced.
                let synced = self.source_synced();
                self.metrics.synced.store(synced, Ordering::Relaxed);
                if let Some(d) = &mut demotions {
                    // A new leader reads the demotions from NB again.
                    d.reload();
                }
                continue;
            }
            if let Some(d) = &mut demotions
                && self.source_synced()
            {
                d.update(&self.store, &self.cache.snapshot());
                let (eip, svcgw) = (d.eip(), d.svcgw());
                let config = &mut self.resolver.config;
                if eip != config.eipgw_demotions || svcgw != config.svcgw_demotion {
                    config.eipgw_demotions = eip;
                    config.svcgw_demotion = svcgw;
                    self.full = true;
                    dirty = true;
                }
            }
            if last_pass.elapsed() >= self.opts.resync
                || retry_at.is_some_and(|t| Instant::now() >= t)
            {
                dirty = true;
                self.full = true;
                // The resync also re-reads every manifest (a rewrite the file stamps
                // missed is found by its content).
                // (The only source without the `kube` feature.)
                #[allow(irrefutable_let_patterns)]
                if let Source::Dir(dir) = &mut self.source {
                    dir.forget_stamps();
                }
            }
            if !dirty || !self.source_synced() {
                continue;
            }
            dirty = false;
            if self.full {
                last_pass = Instant::now();
            }
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

    /// Before a big write of new rows (a cold start): narrows the cache's monitor of each
    /// table in `new` that gets at least [`Options::defer_echo_min`] new rows
    /// (`Load_Balancer`, `Logical_Switch_Port`) to the rows it already holds, so that the
    /// server does not build and send the echo of every new row (a ~9 MB `update2` at
    /// 10,000 services, which it sends before the transaction's reply: ~40 % of the
    /// transaction's time) while NB waits for it. [`Controller::take_echo`] widens them
    /// again right after. Returns the tables it narrowed.
    async fn defer_echo(&self, new: &[(&'static str, usize)]) -> Vec<&'static str> {
        let tables: Vec<&'static str> = new
            .iter()
            .filter(|(_, n)| *n >= self.opts.defer_echo_min)
            .map(|(t, _)| *t)
            .collect();
        if tables.is_empty() || !self.gate.is_open() {
            return Vec::new();
        }
        let Some(mut requests) = self.client.monitor_requests(&self.monitor) else {
            return Vec::new();
        };
        let snap = self.cache.snapshot();
        let mut narrowed = Vec::new();
        for table in tables {
            let Some(req) = requests.get_mut(table) else {
                continue;
            };
            // Every row the cache holds stays selected (no deletes come back); new rows
            // are not.
            let held: Vec<serde_json::Value> = snap
                .rows(table)
                .map(|(u, _)| serde_json::json!(["_uuid", "==", ["uuid", u.to_string()]]))
                .collect();
            req.where_ = Some(if held.is_empty() {
                serde_json::json!([false])
            } else {
                serde_json::Value::Array(held)
            });
            narrowed.push(table);
        }
        drop(snap);
        if narrowed.is_empty() {
            return narrowed;
        }
        match self
            .client
            .monitor_cond_change(&self.monitor, requests)
            .await
        {
            Ok(()) => {
                self.metrics.deferred_echoes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(tables = ?narrowed, "echo deferred until after the write");
                narrowed
            }
            Err(e) => {
                // Nothing lost: the write goes ahead with the echo, as below the threshold.
                tracing::warn!(error = %e, "could not defer the echo");
                self.take_echo(&narrowed).await;
                Vec::new()
            }
        }
    }

    /// Widens the cache's monitor of `tables` to every row again: the server sends the
    /// rows written meanwhile (and anyone else's) before its reply, so the cache equals NB
    /// when this returns, and every row arrives as a change (the pass after verifies them,
    /// as it does the echo of any write). If the connection drops first, the client reloads
    /// the monitor on the next one and the reconnect makes the next pass a full one.
    async fn take_echo(&self, tables: &[&'static str]) {
        let started = Instant::now();
        let Some(mut requests) = self.client.monitor_requests(&self.monitor) else {
            return;
        };
        for table in tables {
            if let Some(req) = requests.get_mut(*table) {
                req.where_ = None;
            }
        }
        match self
            .client
            .monitor_cond_change(&self.monitor, requests)
            .await
        {
            Ok(()) => tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                tables = ?tables,
                "echo taken"
            ),
            Err(e) => {
                // The cache may miss rows: never plan on it. A reconnect reloads it
                // (`MonitorState::changing`) and makes the next pass a full one.
                tracing::warn!(error = %e, "widening the monitor failed; reloading NB");
                self.client.reconnect();
            }
        }
    }

    /// Sends one phase's plans: together, and one by one if that fails.
    async fn apply(
        &self,
        plans: Vec<(Owner, Plan)>,
        results: &mut BTreeMap<Owner, Programming>,
    ) -> usize {
        let (sent, _) = self.send(plans, results, None);
        self.settle(sent, results).await
    }

    /// Starts one transaction of `plans` (empty plans are done at once, into `results`):
    /// encoded and sent by a task of its own, so that the caller hands over the next batch
    /// meanwhile. The request goes on the wire once `turn` (the previous batch's request
    /// queued) has come; the returned `Turn` is the next batch's. [`Controller::settle`]
    /// takes its outcome.
    fn send(
        &self,
        plans: Vec<(Owner, Plan)>,
        results: &mut BTreeMap<Owner, Programming>,
        turn: Turn,
    ) -> (Sent, Turn) {
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
            let sent = Sent {
                plans: Arc::new(plans),
                reply: None,
            };
            return (sent, turn);
        }
        let plans = Arc::new(plans);
        let writer = self.writer();
        let theirs = plans.clone();
        let (queued, next) = tokio::sync::oneshot::channel();
        let reply = tokio::spawn(async move {
            // One mutate per shared row instead of one per plan (every new service's LB
            // into the VPC's group): see `merge_reference_inserts`. Merged here, on the
            // task's thread, not the caller's; the plans' operations are not copied.
            let all = crate::compiler::plan::merge_reference_inserts(
                theirs.iter().flat_map(|(_, p)| &p.ops),
            );
            let n = all.len();
            // On the wire in the order the batches were made (so NB commits them in key
            // order): after the previous batch's request is queued. A transaction's first
            // poll validates, encodes and queues its request on a ready connection.
            if let Some(turn) = turn {
                let _ = turn.await;
            }
            let reply = writer.transact(&all);
            tokio::pin!(reply);
            let first = futures::poll!(&mut reply);
            let _ = queued.send(());
            match first {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => reply.await,
            }
            .map(|()| n)
        });
        let sent = Sent {
            plans,
            reply: Some(reply),
        };
        (sent, Some(next))
    }

    /// The outcome of a transaction [`Controller::send`] started, into `results`; if it
    /// failed, its plans are sent again one by one (one bad owner never fails another).
    /// Returns the operations that NB took.
    async fn settle(&self, sent: Sent, results: &mut BTreeMap<Owner, Programming>) -> usize {
        let Sent { plans, reply } = sent;
        let Some(reply) = reply else {
            return 0;
        };
        if let Ok(Ok(n)) = reply.await {
            for (o, p) in plans.iter() {
                results.insert(o.clone(), programmed(o, p));
            }
            return n;
        }
        let mut n = 0;
        for (o, p) in plans.iter() {
            match self.transact(&p.ops).await {
                Ok(()) => {
                    n += p.ops.len();
                    results.insert(o.clone(), programmed(o, p));
                }
                Err(e) => {
                    tracing::warn!(owner = %owner_label(o), error = %e, "NB transaction failed");
                    results.insert(
                        o.clone(),
                        Programming::Failed(format!("NB transaction: {e}")),
                    );
                }
            }
        }
        n
    }

    /// The configured BFD timers into `NB_Global` (a cluster-wide setting, no owner of
    /// its own): a failure is reported and retried like an owner's.
    async fn apply_bfd(&self, snap: &Snapshot, report: &mut PassReport) -> usize {
        let mut plan = Plan::new("bfd_");
        crate::compiler::gateways::plan_bfd(snap, &self.opts.bfd, &mut plan);
        if plan.is_empty() {
            return 0;
        }
        match self.transact(&plan.ops).await {
            Ok(()) => plan.ops.len(),
            Err(e) => {
                tracing::warn!(error = %e, "NB transaction failed: BFD timers");
                report
                    .failed
                    .insert("nb-global bfd".to_owned(), format!("NB transaction: {e}"));
                0
            }
        }
    }

    async fn transact(&self, ops: &[Operation]) -> Result<(), ycloud_ovsdb::Error> {
        self.writer().transact(ops).await
    }

    fn writer(&self) -> Writer {
        Writer {
            client: self.client.clone(),
            gate: self.gate.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Notes one NB change for the next pass (see `run`).
    fn note_nb_change(&mut self, c: &ycloud_ovsdb::cache::Change) {
        match service_of_change(c) {
            Some(key) => {
                self.verify.insert(key);
            }
            None => self.full = true,
        }
    }

    /// One reconcile pass: driven by the changes since the last one when it can be, else a
    /// full one. Does nothing when this replica may not write.
    pub async fn pass(&mut self) -> PassReport {
        if !self.gate.is_open() {
            return PassReport {
                skipped: true,
                ..Default::default()
            };
        }
        if !self.full_needed()
            && let Some(report) = self.change_pass().await
        {
            return report;
        }
        self.full_pass().await
    }

    /// Whether the next pass must be a full one whatever changed.
    fn full_needed(&self) -> bool {
        if self.full || self.last.is_none() || self.pending.iter().any(|o| self.broken.contains(o))
        {
            return true;
        }
        // Cluster mode: finalizers are added and released by full passes.
        #[cfg(feature = "kube")]
        if let Source::Kube(k) = &self.source
            && (!k.deleting().is_empty() || !k.needs_finalizer().is_empty())
        {
            return true;
        }
        false
    }

    /// A pass driven by the changes since the last one: re-resolve only the services they
    /// touch, plan those whose rows changed and those whose NB rows changed under us,
    /// write their status only. `None`: the changes need a full pass (nothing was done).
    async fn change_pass(&mut self) -> Option<PassReport> {
        let started = Instant::now();
        let dir = self.is_dir();
        if dir {
            // Verdicts of probes change the backends of the services they check.
            let before = self.store.probes.clone();
            self.probes_before_resolve();
            for (k, p) in &self.store.probes {
                if before.get(k) != Some(p) {
                    self.pending.insert(ObjectRef::from_key("NetworkProbe", k));
                }
            }
            for k in before
                .keys()
                .filter(|k| !self.store.probes.contains_key(*k))
            {
                self.pending.insert(ObjectRef::from_key("NetworkProbe", k));
            }
        } else {
            // Cluster mode: the reflector's verdicts, those of an older generation dropped.
            self.probes_before_resolve();
        }
        let mut r = self.last.take()?;
        // Problems among the services about to be re-resolved, to keep the count (and
        // `controller.yaml`) without going over every status.
        let problems = |r: &Resolved, keys: &BTreeSet<String>| {
            keys.iter()
                .filter(|k| {
                    r.status
                        .get(&ObjectRef::from_key("YusurService", k))
                        .is_some_and(|st| st.problem.is_some())
                })
                .count()
        };
        let before = match self.resolver.affected(&self.store, &self.pending) {
            Some(keys) => problems(&r, &keys),
            None => 0,
        };
        let Some(keys) = self
            .resolver
            .resolve_changes(&self.store, &self.pending, &mut r)
        else {
            self.last = Some(r);
            return None;
        };
        let after = problems(&r, &keys);
        self.passes += 1;
        self.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
        if dir {
            self.probes_after_resolve(&r);
        }
        let resolve_us = started.elapsed().as_micros() as u64;
        let snap = self.cache.snapshot();
        let mut results: BTreeMap<Owner, Programming> = BTreeMap::new();
        let mut plans = Vec::new();
        let mut report = PassReport::default();
        for (o, p) in self.inc.plan_some(&snap, &r, &keys, &self.verify) {
            match p {
                Ok(p) => plans.push((o, p)),
                Err(e) => {
                    results.insert(o, Programming::Failed(e));
                }
            }
        }
        // Let go of the snapshot before the transaction: its echo is applied to the cache
        // while we wait for the reply, and a table a snapshot still shares is copied whole
        // (`Arc::make_mut`): at 10,000 services, the load balancers' map and indexes for
        // every change.
        drop(snap);
        report.ops = self.apply(plans, &mut results).await;
        let failed: BTreeSet<Owner> = results
            .iter()
            .filter(|(_, p)| matches!(p, Programming::Failed(_)))
            .map(|(o, _)| o.clone())
            .collect();
        for (o, res) in &results {
            if let Programming::Failed(m) = res {
                report.failed.insert(owner_label(o), m.clone());
            }
        }
        let touched: BTreeSet<String> = keys.union(&self.verify).cloned().collect();
        self.inc.commit_some(&r, &touched, &failed);

        // Status of the re-resolved services only.
        let status_started = Instant::now();
        let mut rows: Vec<StatusRow> = Vec::new();
        let mut gone: Vec<ObjectRef> = Vec::new();
        for k in &keys {
            let o = ObjectRef::from_key("YusurService", k);
            let Some(st) = r.status.get(&o) else {
                gone.push(o);
                continue;
            };
            let owner = Owner::Service(k.clone());
            let programming = match results.get(&owner) {
                Some(p) => p.clone(),
                None if r.services.contains_key(k) => Programming::Done,
                None => Programming::NotAttempted,
            };
            rows.push((
                o.clone(),
                st.clone(),
                programming,
                self.store.generation(&o),
            ));
        }
        match &mut self.sink {
            StatusSink::Files(w) => {
                for (o, st, programming, generation) in &rows {
                    if let Err(e) = w.write(o, st, programming, *generation) {
                        tracing::warn!(object = %o, error = %e, "status not written");
                    }
                }
                for o in &gone {
                    if let Err(e) = w.remove(o) {
                        tracing::warn!(object = %o, error = %e, "status file not removed");
                    }
                }
            }
            #[cfg(feature = "kube")]
            StatusSink::Api(_) => {
                self.write_api(&rows, &Resolved::default(), &mut report)
                    .await;
                // The NetworkProbes of every service (unchanged ones cost no request).
                self.probes_to_api(&r, &mut report).await;
            }
        }
        // (The source's problems are in `r.status` too: the full pass put them there.)
        let was = self.metrics.object_errors.load(Ordering::Relaxed) as usize;
        report.problems = (was + after).saturating_sub(before);
        self.metrics
            .object_errors
            .store(report.problems as u64, Ordering::Relaxed);
        // `controller.yaml` counts objects and problems per kind over every status: only
        // rewritten when a count or the failures may have moved.
        // (A portless pod that came or went moves the object count.)
        let objects_moved = self.store.len() as u64 != self.metrics.objects.load(Ordering::Relaxed);
        let summary_due = before != after
            || objects_moved
            || !gone.is_empty()
            || !report.failed.is_empty()
            || self.summary_stale;
        self.summary_stale = !report.failed.is_empty();
        // (The only sink without the `kube` feature.)
        #[allow(irrefutable_let_patterns)]
        if let StatusSink::Files(w) = &mut self.sink
            && summary_due
        {
            write_summary(w, &r.status, &report, self.store.len());
        }
        self.metrics
            .objects
            .store(self.store.len() as u64, Ordering::Relaxed);
        if report.failed.is_empty() {
            self.metrics.synced.store(true, Ordering::Relaxed);
        }
        tracing::debug!(
            pass = self.passes,
            services = keys.len(),
            verified = self.verify.len(),
            ops = report.ops,
            failed = report.failed.len(),
            resolve_us,
            status_us = status_started.elapsed().as_micros() as u64,
            elapsed_us = started.elapsed().as_micros() as u64,
            "reconciled changes"
        );
        self.pending.clear();
        self.verify.clear();
        self.last = Some(r);
        Some(report)
    }

    /// A full pass: resolve every object, plan every owner, write every status.
    async fn full_pass(&mut self) -> PassReport {
        self.full = false;
        self.pending.clear();
        self.verify.clear();
        let started = Instant::now();
        self.passes += 1;
        self.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
        self.metrics.full_passes.fetch_add(1, Ordering::Relaxed);
        let mut report = PassReport::default();
        let snap = self.cache.snapshot();
        let dir = self.is_dir();
        self.probes_before_resolve();
        let mut resolved = self
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
        let topology_started = Instant::now();
        // (The topology owns no service: the services in NB are the same after it.)
        let deferred = self
            .defer_echo(&[
                ("Load_Balancer", new_lbs(&resolved, &in_nb)),
                ("Logical_Switch_Port", new_lsps(&resolved, &snap)),
            ])
            .await;
        let mut ops = self.apply_bfd(&snap, &mut report).await;
        ops += self
            .apply(plan_topology(&snap, &resolved, &in_nb), &mut results)
            .await;
        let topology_ms = topology_started.elapsed().as_millis() as u64;

        // The services hang off what the topology phase just wrote: plan them on a fresh
        // snapshot.
        let services_started = Instant::now();
        let snap = self.cache.snapshot();
        in_nb.extend(owners_in_nb(&snap));
        // Planned first (on several threads, while NB is idle), then sent in batches: NB
        // commits one while the next is encoded. Planning between the batches instead
        // took the core the server needed (docs/performance.md, "sync", session 6).
        let plan_started = Instant::now();
        let mut sent = Vec::new();
        let mut batch = Vec::new();
        let mut turn = None;
        for (o, p) in plan_services(&snap, &resolved, &in_nb) {
            match p {
                Ok(p) => batch.push((o, p)),
                Err(e) => {
                    results.insert(o, Programming::Failed(e));
                }
            }
            if batch.len() >= self.opts.services_per_transaction {
                let (s, next) = self.send(std::mem::take(&mut batch), &mut results, turn);
                sent.push(s);
                turn = next;
            }
        }
        sent.push(self.send(batch, &mut results, turn).0);
        let plan_ms = plan_started.elapsed().as_millis() as u64;
        for s in sent {
            ops += self.settle(s, &mut results).await;
        }
        let services_ms = services_started.elapsed().as_millis() as u64;
        if !deferred.is_empty() {
            self.take_echo(&deferred).await;
        }

        // Status.
        report.ops = ops;
        for (o, r) in &results {
            if let Programming::Failed(m) = r {
                report.failed.insert(owner_label(o), m.clone());
            }
        }
        let status_started = Instant::now();
        let mut statuses = std::mem::take(&mut resolved.status);
        for p in &self.problems {
            statuses.insert(
                p.object.clone(),
                resolve::ObjectStatus {
                    problem: Some(resolve::Problem {
                        reason: ycloud_crds::condition::reasons::INVALID_SPEC,
                        message: p.message.clone(),
                    }),
                    owner: None,
                    fields: Default::default(),
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
                self.probes_to_api(&resolved, &mut report).await;
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
        let failed: BTreeSet<Owner> = results
            .iter()
            .filter(|(_, p)| matches!(p, Programming::Failed(_)))
            .map(|(o, _)| o.clone())
            .collect();
        self.inc.commit(&resolved, &failed);
        resolved.status = statuses;
        self.last = Some(resolved);
        tracing::info!(
            pass = self.passes,
            ops = report.ops,
            failed = report.failed.len(),
            problems = report.problems,
            resolve_ms,
            topology_ms,
            plan_ms,
            services_ms,
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
    write_summary(w, statuses, report, objects);
    if let Err(e) = w.finish() {
        tracing::warn!(error = %e, "pruning status files");
    }
}

/// `controller.yaml`: synced, object and problem counts per kind, failed owners.
fn write_summary(
    w: &mut StatusWriter,
    statuses: &BTreeMap<ObjectRef, resolve::ObjectStatus>,
    report: &PassReport,
    objects: usize,
) {
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
    /// Cluster mode: notified when a probe this controller runs itself reports (the node
    /// daemons' verdicts arrive through the NetworkProbe watch).
    fn watch_probe_verdicts(&self) -> Arc<tokio::sync::Notify> {
        if self.is_dir() {
            crate::probes::watch_status(&self.opts.status_dir, crate::probes::STATUS_POLL)
        } else {
            self.probes.cluster.notify()
        }
    }

    /// Reads the changed verdict files (manifest mode) or the reports of the probes run
    /// here (cluster mode); whether a verdict changed.
    fn probe_verdicts_changed(&mut self) -> bool {
        if self.is_dir() {
            self.probes.read_statuses()
        } else {
            self.probes.cluster.changed()
        }
    }

    /// Reads the verdicts and hands them to resolution through the store's probes.
    /// Cluster mode: the reflector put them there; a verdict of an older generation of
    /// its probe is dropped (no verdict yet is not a failure).
    fn probes_before_resolve(&mut self) {
        if !self.is_dir() {
            crate::probes::drop_stale_verdicts(&mut self.store);
            // The probes no node runs are run here (the leader plans, so it probes too).
            self.probes.cluster.sync(&self.store.probes);
            self.probes.cluster.changed();
            self.probes.cluster.inject(&mut self.store);
            return;
        }
        self.probes.read_statuses();
        self.probes.inject(&mut self.store);
    }

    /// Cluster mode: the NetworkProbe objects this pass wants, by server-side apply; ours
    /// nobody wants deleted. A failed write is retried like a failed status.
    #[cfg(feature = "kube")]
    async fn probes_to_api(&mut self, resolved: &Resolved, report: &mut PassReport) {
        let (Source::Kube(src), StatusSink::Api(api)) = (&self.source, &mut self.sink) else {
            return;
        };
        let (mut sent, mut errors) = api.probes(&resolved.probes, src).await;
        let (local_sent, local_errors) = api.local_probe_statuses(&mut self.probes.cluster).await;
        sent += local_sent;
        errors.extend(local_errors);
        for (probe, e) in errors {
            tracing::warn!(%probe, error = %e, "NetworkProbe not written");
            report
                .failed
                .insert(format!("NetworkProbe {probe}"), e.to_string());
        }
        if sent > 0 {
            tracing::debug!(requests = sent, "NetworkProbes written");
        }
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

/// Keeps `nb_connected` (and so `/readyz`) true only while the NB client has a connection;
/// sets `reconnected` on every connection after the first (the cache was reloaded).
fn track_connection(
    mut events: tokio::sync::mpsc::UnboundedReceiver<ycloud_ovsdb::client::Event>,
    metrics: Arc<Metrics>,
    reconnected: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        let mut first = true;
        while let Some(e) = events.recv().await {
            match e {
                ycloud_ovsdb::client::Event::Connected { .. } => {
                    metrics.nb_connected.store(true, Ordering::Relaxed);
                    if !std::mem::take(&mut first) {
                        reconnected.store(true, Ordering::Relaxed);
                    }
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
/// What an NB transaction needs, apart from the controller (a [`Controller::send`]'s task
/// owns one): the client, the write gate, the counters.
struct Writer {
    client: Client,
    gate: WriteGate,
    metrics: Arc<Metrics>,
}

impl Writer {
    async fn transact<O: std::borrow::Borrow<Operation> + Sync>(
        &self,
        ops: &[O],
    ) -> Result<(), ycloud_ovsdb::Error> {
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
        // The request as the client encoded it; a failed one's operations counted again
        // (without the envelope: the error does not carry the size).
        let bytes = match &res {
            Ok(t) => t.request_bytes,
            Err(_) => op_bytes(ops),
        };
        m.txn_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
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
}

/// When a batch of [`Controller::send`] may go on the wire: once the previous one's request
/// is queued (`None`: at once).
type Turn = Option<tokio::sync::oneshot::Receiver<()>>;

/// A transaction [`Controller::send`] started: its plans and, unless it had nothing to
/// send, the task that waits for its reply.
struct Sent {
    plans: Arc<Vec<(Owner, Plan)>>,
    reply: Option<tokio::task::JoinHandle<Result<usize, ycloud_ovsdb::Error>>>,
}

fn programmed(o: &Owner, p: &Plan) -> Programming {
    if p.conflicts.is_empty() {
        Programming::Done
    } else {
        tracing::warn!(owner = %owner_label(o), conflicts = ?p.conflicts, "NB rows taken by others");
        Programming::Failed(p.conflicts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    //! The change path through the real loop (`run`), manifest mode, a real NB.

    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant, SystemTime};

    use ycloud_ovsdb::cache::Cache;
    use ycloud_ovsdb::{Client, ClientConfig};
    use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

    use super::*;

    const TOPOLOGY: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: t}\n---\n\
        apiVersion: ycloud.io/v1alpha1\nkind: Vpc\nmetadata: {name: t}\n\
        spec: {serviceCIDRs: [10.96.0.0/16], namespaces: [t]}\n---\n\
        apiVersion: ycloud.io/v1alpha1\nkind: Subnet\nmetadata: {name: s0}\n\
        spec: {vpc: t, cidrBlocks: [10.16.0.0/16], namespaces: [t]}\n";

    fn services(backend_of_svc1: &str) -> String {
        let mut text = String::new();
        for (i, b) in [backend_of_svc1, "10.16.0.20", "10.16.0.30"]
            .iter()
            .enumerate()
        {
            text.push_str(&format!(
                "---\napiVersion: ycloud.io/v1alpha1\nkind: YusurService\n\
                 metadata: {{name: svc-{}, namespace: t}}\nspec:\n  scenarios: [ClusterIP]\n  \
                 ports: [{{name: http, protocol: TCP, port: 80, targetPort: 8080}}]\n  \
                 staticBackends: [{{address: {b}}}]\n",
                i + 1
            ));
        }
        for app in ["a", "b"] {
            text.push_str(&format!(
                "---\napiVersion: ycloud.io/v1alpha1\nkind: YusurService\n\
                 metadata: {{name: sel-{app}, namespace: t}}\nspec:\n  scenarios: [ClusterIP]\n  \
                 ports: [{{name: http, protocol: TCP, port: 80, targetPort: 8080}}]\n  \
                 backends: [{{type: Pod, selector: {{matchLabels: {{app: {app}}}}}}}]\n"
            ));
        }
        text
    }

    fn pods(label_of_p2: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p1, namespace: t, labels: {{app: a}}}}\n\
             spec: {{containers: [{{name: c}}]}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: p2, namespace: t, labels: {{app: {label_of_p2}}}}}\n\
             spec: {{containers: [{{name: c}}]}}\n"
        )
    }

    /// Writes by rename, as editors and the benchmark do.
    fn write(dir: &Path, name: &str, text: &str) {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }

    /// Load balancer name → its VIPs, as NB holds them.
    fn lbs(cache: &Cache) -> BTreeMap<String, String> {
        cache
            .snapshot()
            .rows("Load_Balancer")
            .map(|(_, r)| {
                let name = r
                    .get("name")
                    .and_then(|v| v.as_atom())
                    .and_then(|a| a.as_str())
                    .unwrap_or_default()
                    .to_owned();
                (name, format!("{:?}", r.get("vips")))
            })
            .collect()
    }

    /// Status file → modification time.
    fn stamps(dir: &Path) -> BTreeMap<std::path::PathBuf, SystemTime> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                    out.insert(p, m);
                }
            }
        }
        out
    }

    async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Until no pass has run for 300 ms.
    async fn settle(m: &Metrics) {
        let mut last = (m.reconciles.load(Ordering::Relaxed), Instant::now());
        while last.1.elapsed() < Duration::from_millis(300) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = m.reconciles.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            }
        }
    }

    /// Options of a test loop on `dir` against `nb`: no resync within a test.
    fn test_options(dir: &Path, status_dir: PathBuf, nb: &OvsdbServer, poll: Duration) -> Options {
        Options {
            source_dir: dir.to_owned(),
            status_dir,
            nb_remotes: vec![nb.unix_remote()],
            nb_tls: None,
            sb_remotes: Vec::new(),
            resolve: resolve::Config::default(),
            poll,
            resync: Duration::from_secs(3600),
            bfd: Default::default(),
            // Every full pass that inserts a load balancer takes the deferred path.
            defer_echo_min: 1,
            services_per_transaction: SERVICES_PER_TRANSACTION,
        }
    }

    /// The loop of a controller connected with `opts`, running until `stop` is sent.
    async fn start_loop(
        opts: Options,
        metrics: &Arc<Metrics>,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), Error>>,
    ) {
        let c = Controller::connect(opts, metrics.clone())
            .await
            .expect("connect");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(c.run(async {
            let _ = stopped.await;
        }));
        (stop, run)
    }

    /// Our own view of NB: a client (kept alive by the caller) monitoring into a cache.
    async fn nb_view(nb: &OvsdbServer) -> (Client, Cache) {
        let (client, _events) =
            Client::connect(ClientConfig::new(vec![nb.unix_remote()], "OVN_Northbound"))
                .await
                .expect("connect");
        let schema = Arc::new(client.get_schema("OVN_Northbound").await.expect("schema"));
        let cache = crate::compiler::nb::cache(schema).expect("cache");
        client.monitor_cache(&cache).await.expect("monitor");
        (client, cache)
    }

    fn counters(m: &Metrics) -> (u64, u64) {
        (
            m.transactions.load(Ordering::Relaxed),
            m.txn_ops.load(Ordering::Relaxed),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edit_or_a_relabelled_pod_rewrites_exactly_the_rows_of_the_services_it_touches() {
        let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB server");
        let dir = tempfile::tempdir().expect("tmp");
        let status = dir.path().join(".status");
        write(dir.path(), "00-topology.yaml", TOPOLOGY);
        write(dir.path(), "services.yaml", &services("10.16.0.10"));
        write(dir.path(), "pods.yaml", &pods("b"));
        let opts = test_options(dir.path(), status.clone(), &nb, Duration::from_millis(10));
        let metrics = Arc::new(Metrics::default());
        let (stop, run) = start_loop(opts.clone(), &metrics).await;

        // Our own view of NB.
        let (client, cache) = nb_view(&nb).await;
        wait_until("5 load balancers", || lbs(&cache).len() == 5).await;
        settle(&metrics).await;
        assert!(
            lbs(&cache)["ysvc:t/sel-b:tcp:cluster"].contains(":8080"),
            "p2 is a backend of sel-b"
        );
        let lb = |s: &str| format!("ysvc:t/{s}:tcp:cluster");
        let passes = metrics.reconciles.load(Ordering::Relaxed);
        let full = metrics.full_passes.load(Ordering::Relaxed);

        // 1. One backend of one service of five.
        let before = lbs(&cache);
        let files = stamps(&status);
        let (txns, ops) = counters(&metrics);
        write(dir.path(), "services.yaml", &services("10.16.0.11"));
        wait_until("the new backend in NB", || {
            lbs(&cache)[&lb("svc-1")].contains("10.16.0.11:8080")
        })
        .await;
        settle(&metrics).await;
        let after = lbs(&cache);
        let moved: Vec<&String> = after.keys().filter(|k| before[*k] != after[*k]).collect();
        assert_eq!(moved, [&lb("svc-1")], "only svc-1's load balancer changed");
        assert_eq!(
            counters(&metrics),
            (txns + 1, ops + 1),
            "one transaction of one operation"
        );
        assert_eq!(
            stamps(&status),
            files,
            "no status file rewritten (svc-1 is still Ready with 1/1 backends)"
        );

        // 2. A pod moves from one selector to the other: exactly the two services.
        let before = after;
        let (txns, _) = counters(&metrics);
        write(dir.path(), "pods.yaml", &pods("a"));
        wait_until("sel-b without backends", || {
            !lbs(&cache)[&lb("sel-b")].contains(":8080")
        })
        .await;
        settle(&metrics).await;
        let after = lbs(&cache);
        let moved: Vec<&String> = after.keys().filter(|k| before[*k] != after[*k]).collect();
        assert_eq!(moved, [&lb("sel-a"), &lb("sel-b")]);
        assert_eq!(counters(&metrics).0, txns + 1, "one transaction");
        let sel_a = status.join("YusurService/t/sel-a.yaml");
        let text = std::fs::read_to_string(&sel_a).expect("sel-a status");
        assert!(
            text.contains("total: 2"),
            "sel-a's status counts 2 backends: {text}"
        );

        // Both went through change passes: no full pass since the start.
        assert!(metrics.reconciles.load(Ordering::Relaxed) > passes);
        assert_eq!(
            metrics.full_passes.load(Ordering::Relaxed),
            full,
            "no full pass"
        );
        let _ = stop.send(());
        run.await.expect("join").expect("run");

        // A full pass of a fresh controller finds nothing to do: the change passes left NB
        // exactly as a full pass would.
        let mut fresh = Controller::connect(opts, Arc::new(Metrics::default()))
            .await
            .expect("connect");
        assert!(fresh.refresh());
        let report = fresh.pass().await;
        assert_eq!(report.ops, 0, "{report:?}");
        assert!(report.failed.is_empty(), "{report:?}");
        fresh.client.close();
        client.close();
    }

    /// Load balancer name → how many rows carry it, and the rows' uuids, in a cache.
    fn lb_rows(cache: &Cache) -> (BTreeMap<String, usize>, BTreeSet<String>) {
        let snap = cache.snapshot();
        let mut names = BTreeMap::new();
        let mut uuids = BTreeSet::new();
        for (u, r) in snap.rows("Load_Balancer") {
            let name = r
                .get("name")
                .and_then(|v| v.as_atom())
                .and_then(|a| a.as_str())
                .unwrap_or_default()
                .to_owned();
            *names.entry(name).or_insert(0) += 1;
            uuids.insert(u.to_string());
        }
        (names, uuids)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cold_start_that_defers_its_echo_and_sends_services_in_batches_ends_with_the_cache_equal_to_nb_and_drift_repaired()
     {
        let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB server");
        let dir = tempfile::tempdir().expect("tmp");
        let status = dir.path().join(".status");
        write(dir.path(), "00-topology.yaml", TOPOLOGY);
        write(dir.path(), "services.yaml", &services("10.16.0.10"));
        write(dir.path(), "pods.yaml", &pods("b"));
        let mut opts = test_options(dir.path(), status, &nb, Duration::from_millis(10));
        // Several transactions of services, each sent while the next batch is planned.
        opts.services_per_transaction = 2;
        let metrics = Arc::new(Metrics::default());
        let (stop, run) = start_loop(opts.clone(), &metrics).await;
        let (client, cache) = nb_view(&nb).await;
        wait_until("5 load balancers", || lbs(&cache).len() == 5).await;
        settle(&metrics).await;
        assert_eq!(metrics.deferred_echoes.load(Ordering::Relaxed), 1);
        // A cache that missed its own rows would have planned them again: duplicates.
        let (names, _) = lb_rows(&cache);
        assert!(names.values().all(|n| *n == 1), "{names:?}");
        assert_eq!(names.len(), 5, "{names:?}");
        // The pods' ports were deferred too (the same threshold): a cache without them
        // would insert them again, which NB refuses (their names are unique): an error.
        let ports: BTreeSet<String> = cache
            .snapshot()
            .rows("Logical_Switch_Port")
            .filter_map(|(_, r)| Some(r.get("name")?.as_atom()?.as_str()?.to_owned()))
            .filter(|n| n.starts_with("t."))
            .collect();
        assert_eq!(
            ports,
            BTreeSet::from(["t.p1".to_owned(), "t.p2".to_owned()]),
            "the pods' ports"
        );
        assert_eq!(metrics.nb_errors.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.reconcile_errors.load(Ordering::Relaxed), 0);

        // Drift after the deferred echo: repaired, so the cache sees our rows' changes.
        let lb = |s: &str| format!("ysvc:t/{s}:tcp:cluster");
        let good = lbs(&cache)[&lb("svc-2")].clone();
        let svc2 = cache
            .snapshot()
            .rows("Load_Balancer")
            .find(|(_, r)| {
                r.get("name")
                    .and_then(|v| v.as_atom())
                    .and_then(|a| a.as_str())
                    == Some(lb("svc-2").as_str())
            })
            .map(|(u, _)| *u)
            .expect("svc-2's load balancer");
        client
            .transact(&[ycloud_ovsdb::ops::update(
                "Load_Balancer",
                svc2,
                [(
                    "vips".to_owned(),
                    ycloud_ovsdb::value::Value::map([("10.96.9.9:80", "10.0.0.66:80")]),
                )]
                .into(),
            )])
            .await
            .expect("drift");
        wait_until("drift repaired", || lbs(&cache)[&lb("svc-2")] == good).await;
        settle(&metrics).await;
        let _ = stop.send(());
        run.await.expect("join").expect("run");

        // A restart onto NB that holds rows already, with more services: the rows held stay
        // selected while the new ones are written; afterwards the cache equals NB.
        let more = services("10.16.0.10")
            .replace("name: svc-", "name: more-svc-")
            .replace("name: sel-", "name: more-sel-");
        write(dir.path(), "more.yaml", &more);
        let fresh_metrics = Arc::new(Metrics::default());
        let mut fresh = Controller::connect(opts, fresh_metrics.clone())
            .await
            .expect("connect");
        assert!(fresh.refresh());
        let report = fresh.pass().await;
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(fresh_metrics.deferred_echoes.load(Ordering::Relaxed), 1);
        // The new services, two a transaction: at least three transactions of services.
        let transactions = fresh_metrics.transactions.load(Ordering::Relaxed);
        assert!(transactions >= 3, "{transactions} transactions");
        wait_until("10 load balancers", || lbs(&cache).len() == 10).await;
        let (names, uuids) = lb_rows(&cache);
        assert!(names.values().all(|n| *n == 1), "{names:?}");
        assert_eq!(lb_rows(&fresh.cache), (names, uuids), "the cache equals NB");
        assert_eq!(fresh.pass().await.ops, 0, "nothing left to do");
        fresh.client.close();
        client.close();
    }

    /// `controller.yaml`'s object count.
    fn objects_in_summary(status: &Path) -> String {
        let text = std::fs::read_to_string(status.join("controller.yaml")).expect("summary");
        text.lines()
            .find_map(|l| l.strip_prefix("objects: "))
            .expect("objects line")
            .to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edited_manifest_reaches_nb_through_the_directory_watch_with_the_poll_an_hour_away()
    {
        let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB server");
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "00-topology.yaml", TOPOLOGY);
        write(dir.path(), "services.yaml", &services("10.16.0.10"));
        // The first tick is at once (the first pass); the next one is an hour away,
        // so only the inotify watch can start the pass of the edit.
        let opts = test_options(
            dir.path(),
            dir.path().join(".status"),
            &nb,
            Duration::from_secs(3600),
        );
        let metrics = Arc::new(Metrics::default());
        let (stop, run) = start_loop(opts, &metrics).await;
        let (_client, cache) = nb_view(&nb).await;
        let holds = |cache: &Cache, backend: &str| lbs(cache).values().any(|v| v.contains(backend));
        wait_until("the first pass", || holds(&cache, "10.16.0.10")).await;
        settle(&metrics).await;

        let t0 = Instant::now();
        write(dir.path(), "services.yaml", &services("10.16.0.11"));
        wait_until("the edit in NB", || holds(&cache, "10.16.0.11")).await;
        let took = t0.elapsed();
        assert!(!holds(&cache, "10.16.0.10"), "the old backend is gone");
        // A generous bound for a loaded machine, far below the poll's hour.
        assert!(took < Duration::from_secs(10), "took {took:?}");

        let _ = stop.send(());
        run.await.expect("join").expect("run");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pod_without_a_port_of_ours_comes_and_goes_in_a_change_pass_and_one_with_a_port_needs_a_full_pass()
     {
        let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB server");
        let dir = tempfile::tempdir().expect("tmp");
        let status = dir.path().join(".status");
        write(dir.path(), "00-topology.yaml", TOPOLOGY);
        write(dir.path(), "services.yaml", &services("10.16.0.10"));
        write(dir.path(), "pods.yaml", &pods("b"));
        let opts = test_options(dir.path(), status.clone(), &nb, Duration::from_millis(10));
        let metrics = Arc::new(Metrics::default());
        let (stop, run) = start_loop(opts.clone(), &metrics).await;
        let (client, cache) = nb_view(&nb).await;
        wait_until("5 load balancers", || lbs(&cache).len() == 5).await;
        settle(&metrics).await;
        let objects = objects_in_summary(&status);
        let full = metrics.full_passes.load(Ordering::Relaxed);
        let before = lbs(&cache);
        let (txns, _) = counters(&metrics);

        // A pod on the host's network that sel-a selects, and a pod in a namespace no
        // Subnet binds: neither gets a port or an address, so neither is a backend.
        let portless = "apiVersion: v1\nkind: Pod\nmetadata: {name: agent, namespace: t, labels: {app: a}}\n\
             spec: {hostNetwork: true, containers: [{name: c}]}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: stray, namespace: elsewhere, labels: {app: a}}\n\
             spec: {containers: [{name: c}]}\n";
        let passes = metrics.reconciles.load(Ordering::Relaxed);
        write(dir.path(), "portless.yaml", portless);
        wait_until("a pass", || {
            metrics.reconciles.load(Ordering::Relaxed) > passes
        })
        .await;
        settle(&metrics).await;
        assert_eq!(
            metrics.full_passes.load(Ordering::Relaxed),
            full,
            "added in a change pass"
        );
        assert_eq!(counters(&metrics).0, txns, "no transaction");
        assert_eq!(lbs(&cache), before);
        let two_more = (objects.parse::<usize>().expect("count") + 2).to_string();
        assert_eq!(
            objects_in_summary(&status),
            two_more,
            "controller.yaml counts them"
        );

        let passes = metrics.reconciles.load(Ordering::Relaxed);
        std::fs::remove_file(dir.path().join("portless.yaml")).expect("rm");
        wait_until("a pass", || {
            metrics.reconciles.load(Ordering::Relaxed) > passes
        })
        .await;
        settle(&metrics).await;
        assert_eq!(
            metrics.full_passes.load(Ordering::Relaxed),
            full,
            "removed in a change pass"
        );
        assert_eq!(counters(&metrics).0, txns, "no transaction");
        assert_eq!(objects_in_summary(&status), objects);

        // A pod on the VPC's subnet gets a port and an address: the VPC's rows change, so
        // that takes a full pass (and makes it a backend of sel-a).
        write(
            dir.path(),
            "ported.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p3, namespace: t, labels: {app: a}}\n\
             spec: {containers: [{name: c}]}\n",
        );
        wait_until("a full pass", || {
            metrics.full_passes.load(Ordering::Relaxed) > full
        })
        .await;
        settle(&metrics).await;
        let sel_a = &lbs(&cache)["ysvc:t/sel-a:tcp:cluster"];
        assert_eq!(sel_a.matches(":8080").count(), 2, "p1 and p3: {sel_a}");

        let _ = stop.send(());
        run.await.expect("join").expect("run");
        let mut fresh = Controller::connect(opts, Arc::new(Metrics::default()))
            .await
            .expect("connect");
        assert!(fresh.refresh());
        let report = fresh.pass().await;
        assert_eq!(report.ops, 0, "{report:?}");
        fresh.client.close();
        client.close();
    }
}
