//! NetworkProbes, controller side (docs/probes.md): the probes a pass wants, written for
//! the node daemons, and their verdicts read back so unhealthy backends leave the VIPs.
//!
//! Manifest mode, under the status directory `S` the node daemons also get:
//! - `S/probes/<namespace>/<name>.yaml`: one full `NetworkProbe` per (service, backend
//!   address, probed port), written atomically (temp + rename) only when its spec changes,
//!   which bumps `metadata.generation`; files of probes nobody wants are deleted.
//! - `S/probe-status/<namespace>/<name>.yaml`: a `NetworkProbeStatus`, written by the
//!   daemon on `spec.backend.node` (or by this controller, for probes with no node). A
//!   status counts only for the generation it observed, so a changed probe starts healthy
//!   again until its own first verdict ("no verdict yet is not a failure").
//!
//! The directory is watched every [`STATUS_POLL`] by [`watch_status`], so a verdict
//! reaches the VIP map within one poll and one pass, not at the next resync.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ycloud_crds::{
    HealthCheck, NetworkProbe, NetworkProbeSpec, NetworkProbeStatus, ProbeBackend,
    ProbeBackendKind, ProbeType,
};

use crate::store::Store;

/// Subdirectory of the status directory with the desired probes.
pub const PROBES_DIR: &str = "probes";
/// Subdirectory of the status directory with the probes' verdicts.
pub const STATUS_DIR: &str = "probe-status";
/// Label: the service a probe belongs to.
pub const SERVICE_LABEL: &str = "ycloud.io/service";
/// Label: the node whose daemon runs the probe.
pub const NODE_LABEL: &str = "ycloud.io/node";
/// Label: who manages the probe.
pub const MANAGED_BY_LABEL: &str = "ycloud.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "ycloud-controller";
/// How often `S/probe-status/` is checked for new verdicts.
pub const STATUS_POLL: Duration = Duration::from_millis(100);
/// Longest object name Kubernetes accepts (a DNS subdomain).
pub const MAX_NAME: usize = 253;

/// Why a probe file could not be written, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("probe file {path}: {what}")]
    Parse { path: PathBuf, what: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ProbeError + '_ {
    move |source| ProbeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// FNV-1a, 32 bits: a stable hash (std's `DefaultHasher` may change between releases, and
/// a probe's name must not).
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The name of the probe of one backend address (and port) of a service:
/// `<service>-<address with '.' and ':' as '-'>[-<port>]`, e.g. `web-10-0-1-11-8080` or
/// `web-fd00-1--11-8080`. Longer than [`MAX_NAME`]: cut, and ended with `-` and 8 hex
/// digits of a hash of the whole name, so two long names stay distinct.
pub fn probe_name(service: &str, address: IpAddr, port: Option<u16>) -> String {
    let addr: String = address
        .to_string()
        .chars()
        .map(|c| if c == '.' || c == ':' { '-' } else { c })
        .collect();
    let mut name = format!("{service}-{addr}");
    if let Some(p) = port {
        name.push_str(&format!("-{p}"));
    }
    let name = name.to_ascii_lowercase();
    if name.len() <= MAX_NAME {
        return name;
    }
    let hash = format!("{:08x}", fnv1a(&name));
    let mut cut = name[..MAX_NAME - 9].trim_end_matches(['-', '.']).to_owned();
    cut.push('-');
    cut.push_str(&hash);
    cut
}

/// One backend address to probe, as resolution found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub kind: ProbeBackendKind,
    /// `namespace/name` of the Pod, VM or VNicIP; `None` for a static backend.
    pub name: Option<String>,
    pub address: IpAddr,
    /// The node whose daemon runs it; `None`: the controller does.
    pub node: Option<String>,
    /// The backend's target port (used when the health check names none).
    pub target_port: u16,
}

/// The desired `NetworkProbe` of one target of a service with a (non-native) health check.
/// `metadata.generation` is left unset: [`ProbeFiles::sync`] decides it.
pub fn desired_probe(
    namespace: &str,
    service: &str,
    check: &HealthCheck,
    t: &ProbeTarget,
) -> NetworkProbe {
    let port = match check.kind {
        ProbeType::ICMP => None,
        _ => Some(check.port.unwrap_or(t.target_port)),
    };
    let mut labels = BTreeMap::from([
        (SERVICE_LABEL.to_owned(), service.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
    ]);
    if let Some(n) = &t.node {
        labels.insert(NODE_LABEL.to_owned(), n.clone());
    }
    // The probe carries the check without `native` (always false here).
    let mut probe = check.clone();
    probe.native = false;
    NetworkProbe {
        metadata: ObjectMeta {
            name: Some(probe_name(service, t.address, port)),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: NetworkProbeSpec {
            service: service.to_owned(),
            backend: ProbeBackend {
                kind: t.kind,
                name: t.name.clone(),
                address: t.address,
                node: t.node.clone(),
                port,
            },
            probe,
        },
        status: None,
    }
}

/// `namespace/name` of a probe.
pub fn key_of(p: &NetworkProbe) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

/// What one [`ProbeFiles::sync`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub written: usize,
    pub removed: usize,
}

/// The probe files of one status directory: what was written (spec and generation, read
/// back after a restart so generations only grow) and the verdicts read back.
#[derive(Debug)]
pub struct ProbeFiles {
    dir: PathBuf,
    /// Key → the probe as written (spec, labels, generation).
    written: BTreeMap<String, NetworkProbe>,
    /// Key → the last verdict read, with the metadata of its file (unchanged files are
    /// not parsed again).
    statuses: BTreeMap<String, (FileStamp, NetworkProbeStatus)>,
    /// Keys this put into a store's probes (taken out again before the next injection).
    injected: BTreeSet<String>,
    loaded: bool,
    /// The probes no node runs (`spec.backend.node` unset), run here.
    local: Option<LocalProber>,
    /// Cluster mode: the same, verdicts in memory and in the probes' `/status`.
    pub cluster: LocalVerdicts,
}

/// The controller's own prober, for backends no node of ours hosts (static addresses,
/// VNicIPs/BMs without a node): the same `ycloud-probe` scheduler as the node daemons,
/// from the controller's network namespace, writing verdicts to the same
/// `S/probe-status/` files the daemons write (so one reader handles both).
struct LocalProber {
    scheduler: ycloud_probe::Scheduler,
    writer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LocalProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProber")
            .field("probes", &self.scheduler.len())
            .finish()
    }
}

impl Drop for LocalProber {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl LocalProber {
    /// Needs a tokio runtime.
    fn start(status_dir: PathBuf) -> Self {
        let (scheduler, mut reports) =
            ycloud_probe::Scheduler::new(ycloud_probe::SchedulerConfig::default());
        let writer = tokio::spawn(async move {
            while let Some(r) = reports.recv().await {
                let (ns, name) = r.key.split_once('/').unwrap_or(("", &r.key));
                if let Err(e) = ycloud_probe::files::write_status(&status_dir, ns, name, &r.status)
                {
                    tracing::warn!(probe = %r.key, error = %e, "probe status not written");
                }
            }
        });
        LocalProber { scheduler, writer }
    }

    /// Runs exactly the node-less probes of `written`; removes the verdicts of the ones
    /// that stop.
    fn sync(&mut self, status_dir: &Path, written: &BTreeMap<String, NetworkProbe>) {
        let mine: BTreeMap<&String, &NetworkProbe> = written
            .iter()
            .filter(|(_, p)| p.spec.backend.node.is_none())
            .collect();
        let gone: Vec<String> = self
            .scheduler
            .keys()
            .filter(|k| !mine.contains_key(&(*k).to_owned()))
            .map(str::to_owned)
            .collect();
        for k in gone {
            self.scheduler.remove(&k);
            let (ns, name) = k.split_once('/').unwrap_or(("", &k));
            if let Err(e) = ycloud_probe::files::remove_status(status_dir, ns, name) {
                tracing::warn!(probe = %k, error = %e, "probe status not removed");
            }
        }
        for (key, p) in mine {
            match ycloud_probe::Job::from_spec(
                key,
                &p.spec,
                ycloud_probe::Namespace::Current,
                p.metadata.generation,
            ) {
                Ok(job) => self.scheduler.upsert(key, job),
                Err(e) => tracing::warn!(probe = %key, error = %e, "probe not run"),
            }
        }
    }
}

/// Enough of a file's metadata to tell that it was replaced or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct FileStamp {
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> Self {
        FileStamp {
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

/// Every `<dir>/<namespace>/<name>.yaml`, as (key, path).
fn yaml_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(dir) else {
        return out;
    };
    for ns in namespaces.flatten() {
        let Ok(files) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        let ns_name = ns.file_name().to_string_lossy().into_owned();
        for f in files.flatten() {
            let p = f.path();
            let hidden = f.file_name().to_string_lossy().starts_with('.');
            if !hidden
                && p.extension().is_some_and(|x| x == "yaml")
                && let Some(stem) = p.file_stem()
            {
                out.push((format!("{ns_name}/{}", stem.to_string_lossy()), p));
            }
        }
    }
    out.sort();
    out
}

fn write_atomic(path: &Path, text: &str) -> Result<(), ProbeError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(path))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// The YAML of a probe file: `apiVersion`, `kind`, `metadata` {name, namespace, labels,
/// generation} and `spec`.
pub fn probe_yaml(p: &NetworkProbe) -> String {
    let mut doc = serde_json::json!({
        "apiVersion": "ycloud.io/v1alpha1",
        "kind": "NetworkProbe",
        "metadata": {
            "name": p.metadata.name,
            "namespace": p.metadata.namespace,
            "labels": p.metadata.labels,
            "generation": p.metadata.generation,
        },
        "spec": p.spec,
    });
    if let Some(m) = doc.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.retain(|_, v| !v.is_null());
    }
    serde_yaml::to_string(&doc).unwrap_or_default()
}

impl ProbeFiles {
    /// The probe files under status directory `status_dir`.
    pub fn new(status_dir: impl Into<PathBuf>) -> Self {
        ProbeFiles {
            dir: status_dir.into(),
            written: BTreeMap::new(),
            statuses: BTreeMap::new(),
            injected: BTreeSet::new(),
            loaded: false,
            local: None,
            cluster: LocalVerdicts::new(),
        }
    }

    /// `S/probes/<namespace>/<name>.yaml`.
    pub fn probe_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.dir
            .join(PROBES_DIR)
            .join(namespace)
            .join(format!("{name}.yaml"))
    }

    /// `S/probe-status/<namespace>/<name>.yaml`.
    pub fn status_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.dir
            .join(STATUS_DIR)
            .join(namespace)
            .join(format!("{name}.yaml"))
    }

    /// The probes as written (after [`ProbeFiles::sync`]), with their generation.
    pub fn written(&self) -> &BTreeMap<String, NetworkProbe> {
        &self.written
    }

    /// What was written before a restart: generations keep growing, and an unchanged
    /// probe is not rewritten (its daemon keeps its counters).
    fn load_written(&mut self) {
        if std::mem::replace(&mut self.loaded, true) {
            return;
        }
        for (key, path) in yaml_files(&self.dir.join(PROBES_DIR)) {
            match std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_yaml::from_str::<NetworkProbe>(&t).ok())
            {
                Some(p) => {
                    self.written.insert(key, p);
                }
                None => {
                    tracing::warn!(path = %path.display(), "unreadable probe file: rewritten");
                }
            }
        }
    }

    /// Makes `S/probes/` hold exactly `desired` (by `namespace/name`): a new probe gets
    /// generation 1, a changed spec (or labels) the next generation, an unchanged one is
    /// left alone; files of probes not desired are deleted. Errors are per file: the
    /// others are still written.
    pub fn sync(
        &mut self,
        desired: &BTreeMap<String, NetworkProbe>,
    ) -> (SyncReport, Vec<ProbeError>) {
        self.load_written();
        let mut report = SyncReport::default();
        let mut errors = Vec::new();
        for (key, want) in desired {
            let (ns, name) = key.split_once('/').unwrap_or(("", key));
            let path = self.probe_path(ns, name);
            let have = self.written.get(key);
            let same = have
                .is_some_and(|h| h.spec == want.spec && h.metadata.labels == want.metadata.labels);
            if same && path.exists() {
                continue;
            }
            let mut p = want.clone();
            p.metadata.generation = Some(match have {
                Some(h) if same => h.metadata.generation.unwrap_or(1),
                Some(h) => h.metadata.generation.unwrap_or(0) + 1,
                None => 1,
            });
            match write_atomic(&path, &probe_yaml(&p)) {
                Ok(()) => {
                    report.written += 1;
                    self.written.insert(key.clone(), p);
                }
                Err(e) => errors.push(e),
            }
        }
        let gone: Vec<String> = self
            .written
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let (ns, name) = key.split_once('/').unwrap_or(("", &key));
            let path = self.probe_path(ns, name);
            match std::fs::remove_file(&path) {
                Ok(()) => report.removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    errors.push(ProbeError::Io { path, source: e });
                    continue;
                }
            }
            if let Some(parent) = self.probe_path(ns, name).parent() {
                let _ = std::fs::remove_dir(parent);
            }
            self.written.remove(&key);
            self.statuses.remove(&key);
        }
        self.run_local();
        (report, errors)
    }

    /// Runs the node-less probes here (the scheduler starts with the first one, so a
    /// controller without any needs no runtime for it).
    fn run_local(&mut self) {
        let any = self.written.values().any(|p| p.spec.backend.node.is_none());
        if self.local.is_none() && (!any || tokio::runtime::Handle::try_current().is_err()) {
            return;
        }
        let dir = self.dir.clone();
        let local = self
            .local
            .get_or_insert_with(|| LocalProber::start(dir.clone()));
        local.sync(&dir, &self.written);
    }

    /// How many probes this controller runs itself.
    pub fn local_probes(&self) -> usize {
        self.local.as_ref().map_or(0, |l| l.scheduler.len())
    }

    /// Reads `S/probe-status/` (only files that changed since the last read). Returns
    /// whether any verdict (`healthy` and the generation it is for) changed or went: a
    /// daemon's periodic rewrite (counters, latency) is not a change, so it costs no pass.
    pub fn read_statuses(&mut self) -> bool {
        let mut changed = false;
        let files = yaml_files(&self.dir.join(STATUS_DIR));
        let present: BTreeSet<&String> = files.iter().map(|(k, _)| k).collect();
        let before = self.statuses.len();
        self.statuses.retain(|k, _| present.contains(k));
        changed |= self.statuses.len() != before;
        for (key, path) in &files {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let stamp = FileStamp::of(&meta);
            if self.statuses.get(key).is_some_and(|(s, _)| *s == stamp) {
                continue;
            }
            let parsed = std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    serde_yaml::from_str::<NetworkProbeStatus>(&t).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(st) => {
                    // A verdict is `healthy` for a generation: the same answer for a new
                    // generation of the probe is a change too (the old one no longer
                    // counted). Counters and times are not.
                    let verdict = (st.healthy, st.observed_generation);
                    let old = self.statuses.insert(key.clone(), (stamp, st));
                    changed |=
                        old.map(|(_, o)| (o.healthy, o.observed_generation)) != Some(verdict);
                }
                Err(e) => {
                    // A daemon writes by rename, so this is a bad file, not half a file.
                    tracing::warn!(path = %path.display(), error = %e, "probe status not read");
                }
            }
        }
        changed
    }

    /// The verdict of a probe that counts now: its status, when it observed the probe's
    /// current generation (or names none).
    pub fn status(&self, key: &str) -> Option<&NetworkProbeStatus> {
        let (_, st) = self.statuses.get(key)?;
        let generation = self.written.get(key)?.metadata.generation;
        match (st.observed_generation, generation) {
            (Some(seen), Some(g)) if seen != g => None,
            _ => Some(st),
        }
    }

    /// Puts every written probe that has a verdict into `store.probes` (replacing what a
    /// previous call put there), so resolution drops the backends whose probe says
    /// `healthy: false`.
    pub fn inject(&mut self, store: &mut Store) {
        for k in std::mem::take(&mut self.injected) {
            store.probes.remove(&k);
        }
        for (key, p) in &self.written {
            if let Some(st) = self.status(key) {
                let mut p = p.clone();
                p.status = Some(st.clone());
                store.probes.insert(key.clone(), p);
                self.injected.insert(key.clone());
            }
        }
    }
}

/// Cluster mode: the probes no node runs (`spec.backend.node` unset: static addresses,
/// VNicIPs and bare-metal servers that no node of ours hosts), run by this controller —
/// the leader, since only it plans — with the same `ycloud-probe` scheduler as the node
/// daemons. It watches the same objects a daemon would (the NetworkProbes the reflector
/// holds, with their server-assigned generation) and keeps its verdicts in memory: they
/// reach resolution at once ([`LocalVerdicts::inject`]) and the API server as the probe's
/// `/status` ([`LocalVerdicts::unpublished`], written by `kube::probes::apply_status`).
/// The scheduler reports on transitions at once and otherwise at a bounded rate, so the
/// status writes follow the same bound as a daemon's.
pub struct LocalVerdicts {
    scheduler: Option<ycloud_probe::Scheduler>,
    forwarder: Option<tokio::task::JoinHandle<()>>,
    /// The latest status of every running probe, filled by the forwarder task.
    latest: Arc<std::sync::Mutex<BTreeMap<String, NetworkProbeStatus>>>,
    /// Woken by the forwarder on every report.
    notify: Arc<tokio::sync::Notify>,
    /// `(healthy, observedGeneration)` as last handed to resolution.
    seen: BTreeMap<String, (Option<bool>, Option<i64>)>,
    /// The status last written to the API server, per probe.
    published: BTreeMap<String, NetworkProbeStatus>,
}

impl std::fmt::Debug for LocalVerdicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalVerdicts")
            .field("probes", &self.scheduler.as_ref().map_or(0, |s| s.len()))
            .finish()
    }
}

impl Drop for LocalVerdicts {
    fn drop(&mut self) {
        if let Some(f) = &self.forwarder {
            f.abort();
        }
    }
}

impl Default for LocalVerdicts {
    fn default() -> Self {
        LocalVerdicts::new()
    }
}

impl LocalVerdicts {
    pub fn new() -> Self {
        LocalVerdicts {
            scheduler: None,
            forwarder: None,
            latest: Arc::default(),
            notify: Arc::new(tokio::sync::Notify::new()),
            seen: BTreeMap::new(),
            published: BTreeMap::new(),
        }
    }

    /// Notified whenever a probe run here reports.
    pub fn notify(&self) -> Arc<tokio::sync::Notify> {
        self.notify.clone()
    }

    /// How many probes this controller runs.
    pub fn len(&self) -> usize {
        self.scheduler.as_ref().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs exactly the node-less probes among `probes` (the reflector's objects) that this
    /// controller manages; forgets the verdicts of the ones that went. The scheduler starts
    /// with the first such probe (a cluster without any runs no task for it).
    pub fn sync(&mut self, probes: &BTreeMap<String, NetworkProbe>) {
        let mine: BTreeMap<&String, &NetworkProbe> = probes
            .iter()
            .filter(|(_, p)| {
                p.spec.backend.node.is_none()
                    && p.metadata.deletion_timestamp.is_none()
                    && p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(MANAGED_BY_LABEL))
                        .is_some_and(|v| v == MANAGED_BY)
            })
            .collect();
        if self.scheduler.is_none() {
            if mine.is_empty() || tokio::runtime::Handle::try_current().is_err() {
                return;
            }
            let (scheduler, mut reports) =
                ycloud_probe::Scheduler::new(ycloud_probe::SchedulerConfig::default());
            let latest = self.latest.clone();
            let notify = self.notify.clone();
            self.forwarder = Some(tokio::spawn(async move {
                while let Some(r) = reports.recv().await {
                    if let Ok(mut l) = latest.lock() {
                        l.insert(r.key, r.status);
                    }
                    notify.notify_one();
                }
            }));
            self.scheduler = Some(scheduler);
        }
        let Some(scheduler) = self.scheduler.as_mut() else {
            return;
        };
        let gone: Vec<String> = scheduler
            .keys()
            .filter(|k| !mine.contains_key(&(*k).to_owned()))
            .map(str::to_owned)
            .collect();
        for k in gone {
            scheduler.remove(&k);
            if let Ok(mut l) = self.latest.lock() {
                l.remove(&k);
            }
            self.seen.remove(&k);
            self.published.remove(&k);
        }
        for (key, p) in mine {
            match ycloud_probe::Job::from_spec(
                key,
                &p.spec,
                ycloud_probe::Namespace::Current,
                p.metadata.generation,
            ) {
                Ok(job) => scheduler.upsert(key, job),
                Err(e) => tracing::warn!(probe = %key, error = %e, "probe not run"),
            }
        }
    }

    /// Whether a verdict (`healthy` and the generation it is for) changed since the last
    /// call: a periodic report of the same verdict costs no pass.
    pub fn changed(&mut self) -> bool {
        let Ok(latest) = self.latest.lock() else {
            return false;
        };
        let mut changed = false;
        for (k, st) in latest.iter() {
            let v = (st.healthy, st.observed_generation);
            if self.seen.get(k) != Some(&v) {
                self.seen.insert(k.clone(), v);
                changed = true;
            }
        }
        changed
    }

    /// Puts the verdicts of the probes run here into the store's probes, over whatever
    /// status the reflector had (ours, written earlier, or none yet); a verdict of an older
    /// generation of its probe is not used.
    pub fn inject(&self, store: &mut Store) {
        let Ok(latest) = self.latest.lock() else {
            return;
        };
        for (k, st) in latest.iter() {
            if let Some(p) = store.probes.get_mut(k)
                && (st.observed_generation.is_none()
                    || st.observed_generation == p.metadata.generation)
            {
                p.status = Some(st.clone());
            }
        }
    }

    /// The statuses not written to the API server yet (or changed since).
    pub fn unpublished(&self) -> Vec<(String, NetworkProbeStatus)> {
        let Ok(latest) = self.latest.lock() else {
            return Vec::new();
        };
        latest
            .iter()
            .filter(|(k, st)| self.published.get(*k) != Some(*st))
            .map(|(k, st)| (k.clone(), st.clone()))
            .collect()
    }

    /// `status` of `key` is on the API server now.
    pub fn published(&mut self, key: &str, status: NetworkProbeStatus) {
        self.published.insert(key.to_owned(), status);
    }
}

/// Cluster mode: the reflector puts every NetworkProbe, status and all, into the store. A
/// verdict counts only for the generation it observed (as in manifest mode): the status of
/// a probe whose spec changed since is taken out, so its backend stays until the probe's
/// own first verdict.
pub fn drop_stale_verdicts(store: &mut Store) {
    for p in store.probes.values_mut() {
        let seen = p.status.as_ref().and_then(|s| s.observed_generation);
        if let (Some(seen), Some(g)) = (seen, p.metadata.generation)
            && seen != g
        {
            p.status = None;
        }
    }
}

/// Watches `S/probe-status/` every `period` and notifies when a file appears, changes or
/// goes (by name, inode, size and modification time: daemons write by rename). The task
/// ends when the returned `Notify` is dropped. Needs a tokio runtime.
pub fn watch_status(status_dir: &Path, period: Duration) -> Arc<tokio::sync::Notify> {
    let notify = Arc::new(tokio::sync::Notify::new());
    let weak: Weak<tokio::sync::Notify> = Arc::downgrade(&notify);
    let dir = status_dir.join(STATUS_DIR);
    tokio::spawn(async move {
        let mut last: Option<Vec<(String, FileStamp)>> = None;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(n) = weak.upgrade() else { break };
            let dir = dir.clone();
            let now = tokio::task::spawn_blocking(move || {
                yaml_files(&dir)
                    .into_iter()
                    .filter_map(|(k, p)| Some((k, FileStamp::of(&std::fs::metadata(p).ok()?))))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            if last.as_ref() != Some(&now) {
                if last.is_some() {
                    n.notify_one();
                }
                last = Some(now);
            }
        }
    });
    notify
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> HealthCheck {
        serde_yaml::from_str(
            "{type: HTTP, path: /healthz, intervalMillis: 500, failureThreshold: 2}",
        )
        .expect("check")
    }

    fn target(addr: &str, node: Option<&str>) -> ProbeTarget {
        ProbeTarget {
            kind: ProbeBackendKind::Pod,
            name: Some("shop/web-1".into()),
            address: addr.parse().unwrap(),
            node: node.map(str::to_owned),
            target_port: 8080,
        }
    }

    #[test]
    fn probe_names_follow_the_contract_and_long_ones_are_cut_and_hashed() {
        let a: IpAddr = "10.0.1.11".parse().unwrap();
        assert_eq!(probe_name("web", a, Some(8080)), "web-10-0-1-11-8080");
        assert_eq!(probe_name("web", a, None), "web-10-0-1-11");
        let v6: IpAddr = "fd00:1::11".parse().unwrap();
        assert_eq!(probe_name("Web", v6, Some(80)), "web-fd00-1--11-80");
        let long = "s".repeat(300);
        let n1 = probe_name(&long, a, Some(80));
        let n2 = probe_name(&long, a, Some(81));
        assert_eq!(n1.len(), MAX_NAME);
        assert_ne!(n1, n2, "the hash keeps two long names apart");
        assert_eq!(n1, probe_name(&long, a, Some(80)), "stable");
    }

    #[test]
    fn a_desired_probe_carries_labels_node_and_the_checks_port_or_the_target_port() {
        let p = desired_probe(
            "shop",
            "web",
            &check(),
            &target("10.0.1.11", Some("node-1")),
        );
        assert_eq!(key_of(&p), "shop/web-10-0-1-11-8080");
        let labels = p.metadata.labels.clone().unwrap();
        assert_eq!(labels[SERVICE_LABEL], "web");
        assert_eq!(labels[NODE_LABEL], "node-1");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(p.spec.backend.port, Some(8080));
        assert_eq!(p.spec.backend.node.as_deref(), Some("node-1"));
        let mut c = check();
        c.port = Some(9000);
        let p = desired_probe("shop", "web", &c, &target("10.0.1.11", None));
        assert_eq!(p.spec.backend.port, Some(9000));
        assert!(!p.metadata.labels.unwrap().contains_key(NODE_LABEL));
        c.kind = ProbeType::ICMP;
        let p = desired_probe("shop", "web", &c, &target("10.0.1.11", None));
        assert_eq!(p.spec.backend.port, None);
        assert_eq!(p.metadata.name.as_deref(), Some("web-10-0-1-11"));
    }

    fn desired(ps: &[NetworkProbe]) -> BTreeMap<String, NetworkProbe> {
        ps.iter().map(|p| (key_of(p), p.clone())).collect()
    }

    #[test]
    fn sync_writes_new_probes_bumps_the_generation_on_change_and_deletes_the_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = ProbeFiles::new(dir.path());
        let a = desired_probe("shop", "web", &check(), &target("10.0.1.11", Some("n1")));
        let b = desired_probe("shop", "web", &check(), &target("10.0.1.12", Some("n1")));
        let (r, errs) = files.sync(&desired(&[a.clone(), b.clone()]));
        assert!(errs.is_empty());
        assert_eq!(
            r,
            SyncReport {
                written: 2,
                removed: 0
            }
        );
        let path = files.probe_path("shop", "web-10-0-1-11-8080");
        let text = std::fs::read_to_string(&path).unwrap();
        let back: NetworkProbe = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back.metadata.generation, Some(1));
        assert_eq!(back.spec, a.spec);
        assert!(
            text.contains("kind: NetworkProbe") && text.contains("apiVersion: ycloud.io/v1alpha1")
        );

        // Nothing changed: nothing written (the file keeps its inode).
        let ino = std::fs::metadata(&path).unwrap().ino();
        let (r, _) = files.sync(&desired(&[a.clone(), b.clone()]));
        assert_eq!(r, SyncReport::default());
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);

        // A changed spec: generation 2. A probe gone: its file goes.
        let mut c = check();
        c.timeout_millis = 300;
        let a2 = desired_probe("shop", "web", &c, &target("10.0.1.11", Some("n1")));
        let (r, _) = files.sync(&desired(&[a2]));
        assert_eq!(
            r,
            SyncReport {
                written: 1,
                removed: 1
            }
        );
        let back: NetworkProbe =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back.metadata.generation, Some(2));
        assert!(!files.probe_path("shop", "web-10-0-1-12-8080").exists());

        // A restarted controller reads the generations back and does not rewrite.
        let mut again = ProbeFiles::new(dir.path());
        let mut c2 = c.clone();
        let a3 = desired_probe("shop", "web", &c2, &target("10.0.1.11", Some("n1")));
        assert_eq!(again.sync(&desired(&[a3])).0, SyncReport::default());
        c2.timeout_millis = 400;
        let a4 = desired_probe("shop", "web", &c2, &target("10.0.1.11", Some("n1")));
        again.sync(&desired(&[a4]));
        assert_eq!(
            again.written()["shop/web-10-0-1-11-8080"]
                .metadata
                .generation,
            Some(3)
        );
    }

    #[test]
    fn verdicts_of_the_current_generation_reach_the_store_and_stale_or_gone_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = ProbeFiles::new(dir.path());
        let a = desired_probe("shop", "web", &check(), &target("10.0.1.11", Some("n1")));
        files.sync(&desired(std::slice::from_ref(&a)));
        let mut store = Store::default();
        assert!(!files.read_statuses());
        files.inject(&mut store);
        assert!(store.probes.is_empty(), "no verdict yet: nothing to say");

        let st = files.status_path("shop", "web-10-0-1-11-8080");
        write_atomic(
            &st,
            "observedGeneration: 1\nhealthy: false\nconsecutiveFailures: 2\n",
        )
        .unwrap();
        assert!(files.read_statuses());
        assert!(!files.read_statuses(), "an unchanged file is not a change");
        // The daemon's periodic rewrite (new counters, same verdict): no pass for it.
        write_atomic(
            &st,
            "observedGeneration: 1\nhealthy: false\nconsecutiveFailures: 9\n",
        )
        .unwrap();
        assert!(!files.read_statuses(), "new counters are not a new verdict");
        files.inject(&mut store);
        let p = &store.probes["shop/web-10-0-1-11-8080"];
        assert_eq!(p.status.as_ref().unwrap().healthy, Some(false));
        assert_eq!(p.spec.backend.address, a.spec.backend.address);

        // The probe changes (generation 2): the old verdict no longer counts.
        let mut c = check();
        c.timeout_millis = 300;
        files.sync(&desired(&[desired_probe(
            "shop",
            "web",
            &c,
            &target("10.0.1.11", Some("n1")),
        )]));
        files.inject(&mut store);
        assert!(store.probes.is_empty());

        // The same answer for the new generation is a new verdict.
        write_atomic(&st, "observedGeneration: 2\nhealthy: false\n").unwrap();
        assert!(files.read_statuses(), "a verdict for the new generation");
        // Its own verdict counts; then the file goes and so does the verdict.
        write_atomic(&st, "observedGeneration: 2\nhealthy: true\n").unwrap();
        assert!(files.read_statuses());
        files.inject(&mut store);
        assert_eq!(
            store.probes["shop/web-10-0-1-11-8080"]
                .status
                .as_ref()
                .unwrap()
                .healthy,
            Some(true)
        );
        std::fs::remove_file(&st).unwrap();
        assert!(files.read_statuses());
        files.inject(&mut store);
        assert!(store.probes.is_empty());
    }

    #[tokio::test]
    async fn the_status_watcher_notices_a_new_verdict_within_a_few_polls() {
        let dir = tempfile::tempdir().unwrap();
        let n = watch_status(dir.path(), Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(60)).await;
        let files = ProbeFiles::new(dir.path());
        write_atomic(&files.status_path("shop", "x"), "healthy: false\n").unwrap();
        tokio::time::timeout(Duration::from_secs(2), n.notified())
            .await
            .expect("notified");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_probe_no_node_runs_is_run_by_the_controller_and_its_verdict_follows_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let c: HealthCheck = serde_yaml::from_str(
            "{type: TCP, intervalMillis: 100, timeoutMillis: 200, failureThreshold: 2, successThreshold: 1}",
        )
        .unwrap();
        let t = ProbeTarget {
            kind: ProbeBackendKind::Static,
            name: None,
            address: "127.0.0.1".parse().unwrap(),
            node: None,
            target_port: port,
        };
        let p = desired_probe("shop", "web", &c, &t);
        let key = key_of(&p);
        let mut files = ProbeFiles::new(dir.path());
        files.sync(&desired(&[p]));
        assert_eq!(files.local_probes(), 1);
        let mut store = Store::default();
        let verdict = |files: &mut ProbeFiles, store: &mut Store| {
            files.read_statuses();
            files.inject(store);
            store
                .probes
                .get(&key)
                .and_then(|p| p.status.as_ref()?.healthy)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while verdict(&mut files, &mut store) != Some(true) {
            assert!(std::time::Instant::now() < deadline, "never healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(listener);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while verdict(&mut files, &mut store) != Some(false) {
            assert!(std::time::Instant::now() < deadline, "never unhealthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The probe goes: it stops and its verdict file goes with it.
        files.sync(&BTreeMap::new());
        assert_eq!(files.local_probes(), 0);
        assert!(
            !files
                .status_path("shop", key.split_once('/').unwrap().1)
                .exists()
        );
    }
}
