//! The node's probe runner (manifest mode; see docs/probes.md).
//!
//! Every `rescan` (500 ms) it reads `S/probes/<ns>/<name>.yaml` (only files that changed are
//! parsed again), keeps the probes whose `spec.backend.node` is this node in a
//! [`Scheduler`], each run inside its backend pod's network namespace (from the
//! [`PodNetnsStore`] that CNI ADD fills), and writes the statuses the scheduler reports to
//! `S/probe-status/<ns>/<name>.yaml`: on a verdict change at once, otherwise at most once
//! per 10 s. Status files of probes whose file is gone are deleted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use ycloud_crds::{NetworkProbe, ProbeBackend, ProbeBackendKind};
use ycloud_probe::files::{self, ProbeDir};
use ycloud_probe::{Job, Namespace, Report, Scheduler, SchedulerConfig, status};

#[cfg(feature = "kube")]
pub mod cluster;
pub mod pods;

pub use pods::{NetnsEvent, PodNetns, PodNetnsStore};

/// How often `S/probes` is read again (the contract's bound).
pub const DEFAULT_RESCAN: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The controller's status directory `S`.
    pub status_dir: PathBuf,
    /// This node: only probes with `spec.backend.node` equal to it run here.
    pub node_name: String,
    pub rescan: Duration,
    pub scheduler: SchedulerConfig,
}

impl RunnerConfig {
    /// The defaults of the contract: rescan every 500 ms, statuses at most every 10 s.
    pub fn new(status_dir: PathBuf, node_name: String, max_concurrency: usize) -> RunnerConfig {
        RunnerConfig {
            status_dir,
            node_name,
            rescan: DEFAULT_RESCAN,
            scheduler: SchedulerConfig {
                max_concurrency,
                ..SchedulerConfig::default()
            },
        }
    }
}

/// What one rescan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rescan {
    /// Probes of this node now running.
    pub running: usize,
    /// Probes of this node whose spec cannot run (their status says why).
    pub invalid: usize,
    /// Unreadable probe files.
    pub unreadable: usize,
    /// Status files deleted because their probe is gone.
    pub statuses_removed: usize,
}

/// The runner's state; [`Runner::run`] drives it.
pub struct Runner {
    cfg: RunnerConfig,
    pods: Arc<PodNetnsStore>,
    scheduler: Scheduler,
    dir: ProbeDir,
    /// key (`ns/name`) → generation whose spec was invalid (its status is written once).
    invalid: HashMap<String, Option<i64>>,
    /// Every probe file seen by the last scan, any node: statuses without one are removed.
    all_probes: Option<BTreeSet<(String, String)>>,
    /// Errors already logged (a broken file is reported once, not every 500 ms).
    logged: HashSet<String>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("cfg", &self.cfg)
            .field("scheduler", &self.scheduler)
            .finish()
    }
}

impl Runner {
    /// A runner and the receiving end of its reports (see [`Runner::run`]). Needs a tokio
    /// runtime.
    pub fn new(cfg: RunnerConfig, pods: Arc<PodNetnsStore>) -> (Runner, mpsc::Receiver<Report>) {
        let (scheduler, reports) = Scheduler::new(cfg.scheduler.clone());
        let r = Runner {
            cfg,
            pods,
            scheduler,
            dir: ProbeDir::new(),
            invalid: HashMap::new(),
            all_probes: None,
            logged: HashSet::new(),
        };
        (r, reports)
    }

    /// Rescans and writes reports until the task is dropped.
    pub async fn run(mut self, mut reports: mpsc::Receiver<Report>) {
        tracing::info!(dir = %self.cfg.status_dir.display(), node = %self.cfg.node_name, "probe runner started");
        let mut tick = tokio::time::interval(self.cfg.rescan);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.rescan();
                }
                Some(report) = reports.recv() => self.publish(report),
            }
        }
    }

    /// Reads `S/probes` and makes the running probes match it.
    pub fn rescan(&mut self) -> Rescan {
        let scan = self.dir.scan(&self.cfg.status_dir);
        let mut out = Rescan {
            unreadable: scan.errors.len(),
            ..Rescan::default()
        };
        let mut logged = HashSet::new();
        for e in scan.errors {
            let text = e.to_string();
            if !self.logged.contains(&text) {
                tracing::warn!(error = %text, "probe file skipped");
            }
            logged.insert(text);
        }
        self.logged = logged;

        let mut wanted = HashSet::new();
        let mut all = BTreeSet::new();
        for f in &scan.probes {
            all.insert((f.namespace.clone(), f.name.clone()));
            let spec = &f.probe.spec;
            if spec.backend.node.as_deref() != Some(self.cfg.node_name.as_str()) {
                continue;
            }
            let key = format!("{}/{}", f.namespace, f.name);
            let generation = f.probe.metadata.generation;
            let ns = namespace_of(&self.pods, &self.cfg.node_name, &spec.backend);
            match Job::from_spec(&key, spec, ns, generation) {
                Ok(job) => {
                    self.invalid.remove(&key);
                    self.scheduler.upsert(&key, job);
                    wanted.insert(key);
                    out.running += 1;
                }
                Err(e) => {
                    out.invalid += 1;
                    self.scheduler.remove(&key);
                    if self.invalid.get(&key) != Some(&generation) {
                        tracing::warn!(probe = %key, error = %e, "probe cannot run");
                        let s = status::invalid(generation, &e.to_string(), status::now());
                        match files::write_status(&self.cfg.status_dir, &f.namespace, &f.name, &s) {
                            Ok(()) => {
                                self.invalid.insert(key.clone(), generation);
                            }
                            Err(e) => {
                                tracing::warn!(probe = %key, error = %e, "writing the status")
                            }
                        }
                    }
                }
            }
        }
        self.scheduler.retain(|k| wanted.contains(k));
        self.invalid.retain(|k, _| {
            k.split_once('/')
                .is_some_and(|(ns, n)| all.contains(&(ns.to_string(), n.to_string())))
        });
        if self.all_probes.as_ref() != Some(&all) {
            out.statuses_removed = self.remove_orphan_statuses(&all);
            self.all_probes = Some(all);
        }
        out
    }

    /// Writes a report's status, unless its probe stopped meanwhile (a report already in
    /// the channel must not bring back a status file just deleted).
    pub fn publish(&self, report: Report) {
        if self.scheduler.job(&report.key).is_none() {
            return;
        }
        let Some((ns, name)) = report.key.split_once('/') else {
            return;
        };
        if let Some(t) = report.transition {
            tracing::info!(probe = %report.key, transition = ?t, error = ?report.outcome.error, "probe verdict changed");
        }
        if let Err(e) = files::write_status(&self.cfg.status_dir, ns, name, &report.status) {
            tracing::warn!(probe = %report.key, error = %e, "writing the status");
        }
    }

    fn remove_orphan_statuses(&self, all: &BTreeSet<(String, String)>) -> usize {
        let statuses = match files::list_statuses(&self.cfg.status_dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "listing probe statuses");
                return 0;
            }
        };
        let mut removed = 0;
        for (ns, name) in statuses {
            if all.contains(&(ns.clone(), name.clone())) {
                continue;
            }
            match files::remove_status(&self.cfg.status_dir, &ns, &name) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "removing a stale probe status"),
            }
        }
        removed
    }

    /// The running probes' keys.
    pub fn running(&self) -> Vec<String> {
        let mut k: Vec<String> = self.scheduler.keys().map(str::to_string).collect();
        k.sort();
        k
    }
}

/// Where the probe of `backend` runs: a pod's (or VM's) own namespace, else the node's.
pub fn namespace_of(pods: &PodNetnsStore, node_name: &str, backend: &ProbeBackend) -> Namespace {
    match backend.kind {
        ProbeBackendKind::Pod | ProbeBackendKind::VM => {
            let Some(full) = backend.name.as_deref() else {
                return Namespace::Unavailable(format!(
                    "spec.backend.name is missing: cannot tell which {:?}'s network namespace to probe {} from",
                    backend.kind, backend.address
                ));
            };
            let Some((ns, name)) = full.split_once('/') else {
                return Namespace::Unavailable(format!(
                    "spec.backend.name {full:?} is not namespace/name"
                ));
            };
            match pods.lookup(ns, name) {
                Some(path) => Namespace::Path(path),
                None => Namespace::Unavailable(format!(
                    "no network namespace known for {full} on node {node_name}: ycloud-cnid saw no CNI ADD for it"
                )),
            }
        }
        // Their port is on this node but they have no pod namespace: reachable from
        // the node (e.g. a VNicIP on the node's network).
        ProbeBackendKind::BM | ProbeBackendKind::VNicIP | ProbeBackendKind::Static => {
            Namespace::Current
        }
    }
}

/// A `NetworkProbe` as the controller writes it to `S/probes` (for tests and tools).
pub fn probe_yaml(probe: &NetworkProbe) -> String {
    serde_yaml::to_string(probe).expect("a NetworkProbe serializes")
}
