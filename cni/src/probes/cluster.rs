//! The node's probe runner in cluster mode (feature `kube`; docs/probes.md): the same
//! scheduler, probers and pod namespaces as manifest mode, with the API server instead of
//! the status directory.
//!
//! - In: a watch of the NetworkProbes labelled `ycloud.io/node=<node>` (the controller sets
//!   that label from `spec.backend.node`), so a node sees only its own probes and the API
//!   server does the filtering. Objects are watched untyped and parsed one by one: one
//!   probe that does not parse is logged and skipped, not a failed list for all.
//! - Out: each probe's `/status` by server-side apply (field manager `ycloud-cnid`, only
//!   the `status` stanza, so the controller's fields are untouched), when the
//!   [`ycloud_probe::StatusEmitter`] says so: on a verdict change at once, otherwise at most
//!   once per `status_interval` (10 s).
//!
//! The running set is brought in line with the watched set on every watch event and every
//! `resync` (500 ms, as manifest mode's rescan), so a pod whose CNI ADD arrives after its
//! probe gets probed in its namespace within one resync.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use tokio::sync::mpsc;
use ycloud_crds::{NetworkProbe, NetworkProbeStatus};
use ycloud_probe::{Job, Report, Scheduler, SchedulerConfig, status};

use super::{PodNetnsStore, namespace_of};
use crate::kube::FIELD_MANAGER;

/// The label the controller puts on a probe: the node whose daemon runs it.
pub const NODE_LABEL: &str = "ycloud.io/node";

/// The label selector of the probes of `node`.
pub fn selector(node: &str) -> String {
    format!("{NODE_LABEL}={node}")
}

fn resource() -> ApiResource {
    ApiResource::erase::<NetworkProbe>(&())
}

/// The server-side apply document of a probe's status: identity and `status` only.
pub fn status_document(ns: &str, name: &str, st: &NetworkProbeStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "ycloud.io/v1alpha1",
        "kind": "NetworkProbe",
        "metadata": {"name": name, "namespace": ns},
        "status": st,
    })
}

/// Applies the status of probe `ns/name`.
pub async fn apply_status(
    client: &Client,
    ns: &str,
    name: &str,
    st: &NetworkProbeStatus,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource());
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(status_document(ns, name, st)),
    )
    .await
    .map(|_| ())
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node: the label selector of the watch, and only probes with
    /// `spec.backend.node` equal to it run.
    pub node_name: String,
    /// How often the running set is checked against the watched set without an event.
    pub resync: Duration,
    pub scheduler: SchedulerConfig,
}

impl ClusterConfig {
    /// The contract's defaults: resync every 500 ms, statuses at most every 10 s.
    pub fn new(node_name: String, max_concurrency: usize) -> ClusterConfig {
        ClusterConfig {
            node_name,
            resync: super::DEFAULT_RESCAN,
            scheduler: SchedulerConfig {
                max_concurrency,
                ..SchedulerConfig::default()
            },
        }
    }
}

/// The watched probes (what the API server says this node runs).
#[derive(Debug, Default)]
struct Watched {
    probes: BTreeMap<String, Arc<NetworkProbe>>,
    /// A relist in progress: replaces `probes` when complete.
    relist: Option<BTreeMap<String, Arc<NetworkProbe>>>,
    /// Objects that did not parse, by key, with why (logged once per change).
    broken: HashMap<String, String>,
}

fn parse(obj: &DynamicObject) -> Option<(String, Result<NetworkProbe, String>)> {
    let key = format!(
        "{}/{}",
        obj.metadata.namespace.as_deref()?,
        obj.metadata.name.as_deref()?
    );
    let mut doc = match serde_json::to_value(obj) {
        Ok(d) => d,
        Err(e) => return Some((key, Err(e.to_string()))),
    };
    // List items may come without apiVersion/kind.
    doc["apiVersion"] = "ycloud.io/v1alpha1".into();
    doc["kind"] = "NetworkProbe".into();
    Some((key, serde_json::from_value(doc).map_err(|e| e.to_string())))
}

impl Watched {
    fn put(&mut self, obj: &DynamicObject, relisting: bool) {
        let Some((key, parsed)) = parse(obj) else {
            return;
        };
        let map = match (relisting, self.relist.as_mut()) {
            (true, Some(buf)) => buf,
            _ => &mut self.probes,
        };
        match parsed {
            Ok(p) => {
                map.insert(key.clone(), Arc::new(p));
                self.broken.remove(&key);
            }
            Err(why) => {
                map.remove(&key);
                if self.broken.get(&key) != Some(&why) {
                    tracing::warn!(probe = %key, error = %why, "NetworkProbe skipped: it does not parse");
                    self.broken.insert(key, why);
                }
            }
        }
    }

    fn apply(&mut self, ev: Event<DynamicObject>) {
        match ev {
            Event::Init => self.relist = Some(BTreeMap::new()),
            Event::InitApply(o) => self.put(&o, true),
            Event::InitDone => {
                if let Some(fresh) = self.relist.take() {
                    self.probes = fresh;
                }
            }
            Event::Apply(o) => self.put(&o, false),
            Event::Delete(o) => {
                if let Some((key, _)) = parse(&o) {
                    self.probes.remove(&key);
                    self.broken.remove(&key);
                }
            }
        }
    }
}

/// The cluster-mode runner; [`ClusterRunner::run`] drives it.
pub struct ClusterRunner {
    cfg: ClusterConfig,
    client: Client,
    pods: Arc<PodNetnsStore>,
    scheduler: Scheduler,
    reports: Option<mpsc::Receiver<Report>>,
    watched: Watched,
    /// key → generation whose spec was invalid (its status is written once).
    invalid: HashMap<String, Option<i64>>,
    /// Status applies made (for tests and logs).
    pub writes: u64,
}

impl std::fmt::Debug for ClusterRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRunner")
            .field("cfg", &self.cfg)
            .field("scheduler", &self.scheduler)
            .finish()
    }
}

impl ClusterRunner {
    /// Needs a tokio runtime.
    pub fn new(cfg: ClusterConfig, client: Client, pods: Arc<PodNetnsStore>) -> ClusterRunner {
        let (scheduler, reports) = Scheduler::new(cfg.scheduler.clone());
        ClusterRunner {
            cfg,
            client,
            pods,
            scheduler,
            reports: Some(reports),
            watched: Watched::default(),
            invalid: HashMap::new(),
            writes: 0,
        }
    }

    /// Watches this node's probes, runs them and applies their statuses until the task is
    /// dropped. Watch errors (API down, 403, a 410 relist) are logged and retried with
    /// backoff; the probes keep running meanwhile.
    pub async fn run(mut self) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource());
        let wcfg = watcher::Config::default().labels(&selector(&self.cfg.node_name));
        let mut events = watch_stream(api, wcfg).default_backoff().boxed();
        let mut reports = self.reports.take().expect("run once");
        let mut tick = tokio::time::interval(self.cfg.resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(node = %self.cfg.node_name, selector = %selector(&self.cfg.node_name), "probe runner started (cluster mode)");
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(e)) => {
                        let done = matches!(e, Event::Apply(_) | Event::Delete(_) | Event::InitDone);
                        self.watched.apply(e);
                        if done {
                            self.sync().await;
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "NetworkProbe watch failed; retrying"),
                    None => return,
                },
                _ = tick.tick() => self.sync().await,
                Some(report) = reports.recv() => self.publish(report).await,
            }
        }
    }

    /// Makes the running probes match the watched ones.
    async fn sync(&mut self) {
        let mut wanted = HashSet::new();
        let mut invalid_now = Vec::new();
        for (key, p) in &self.watched.probes {
            let spec = &p.spec;
            if spec.backend.node.as_deref() != Some(self.cfg.node_name.as_str()) {
                continue;
            }
            let generation = p.metadata.generation;
            let ns = namespace_of(&self.pods, &self.cfg.node_name, &spec.backend);
            match Job::from_spec(key, spec, ns, generation) {
                Ok(job) => {
                    self.invalid.remove(key);
                    self.scheduler.upsert(key, job);
                    wanted.insert(key.clone());
                }
                Err(e) => {
                    self.scheduler.remove(key);
                    if self.invalid.get(key) != Some(&generation) {
                        invalid_now.push((key.clone(), generation, e.to_string()));
                    }
                }
            }
        }
        self.scheduler.retain(|k| wanted.contains(k));
        let watched = &self.watched.probes;
        self.invalid.retain(|k, _| watched.contains_key(k));
        for (key, generation, why) in invalid_now {
            tracing::warn!(probe = %key, error = %why, "probe cannot run");
            let st = status::invalid(generation, &why, status::now());
            if self.write(&key, &st).await {
                self.invalid.insert(key, generation);
            }
        }
    }

    /// Applies a report's status, unless its probe stopped meanwhile.
    async fn publish(&mut self, report: Report) {
        if self.scheduler.job(&report.key).is_none() {
            return;
        }
        if let Some(t) = report.transition {
            tracing::info!(probe = %report.key, transition = ?t, error = ?report.outcome.error, "probe verdict changed");
        }
        self.write(&report.key, &report.status).await;
    }

    async fn write(&mut self, key: &str, st: &NetworkProbeStatus) -> bool {
        let Some((ns, name)) = key.split_once('/') else {
            return false;
        };
        match apply_status(&self.client, ns, name, st).await {
            Ok(()) => {
                self.writes += 1;
                true
            }
            // Deleted meanwhile: its deletion event stops it.
            Err(kube::Error::Api(s)) if s.code == 404 => false,
            Err(e) => {
                tracing::warn!(probe = %key, error = %e, "probe status not written");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, node: &str, generation: i64, port: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ycloud.io/v1alpha1", "kind": "NetworkProbe",
            "metadata": {"name": name, "namespace": "shop", "generation": generation,
                "labels": {NODE_LABEL: node}},
            "spec": {"service": "web",
                "backend": {"kind": "BM", "address": "10.0.1.11", "node": node, "port": port},
                "probe": {"type": "TCP", "intervalMillis": 500}},
        }))
        .expect("object")
    }

    #[test]
    fn a_relist_replaces_the_watched_set_and_a_probe_that_does_not_parse_is_skipped() {
        let mut w = Watched::default();
        w.apply(Event::Apply(obj("a", "n1", 1, 8080.into())));
        assert!(w.probes.contains_key("shop/a"));
        w.apply(Event::Init);
        w.apply(Event::InitApply(obj("b", "n1", 1, 8080.into())));
        w.apply(Event::InitApply(obj("bad", "n1", 1, "eighty".into())));
        // Half a relist changes nothing yet.
        assert!(w.probes.contains_key("shop/a"));
        w.apply(Event::InitDone);
        assert_eq!(w.probes.keys().collect::<Vec<_>>(), ["shop/b"]);
        assert!(w.broken.contains_key("shop/bad"), "{:?}", w.broken);
        w.apply(Event::Delete(obj("b", "n1", 1, 8080.into())));
        assert!(w.probes.is_empty());
    }

    #[test]
    fn the_status_document_names_the_probe_and_carries_only_the_status() {
        let st = NetworkProbeStatus {
            observed_generation: Some(3),
            healthy: Some(false),
            consecutive_failures: 2,
            ..Default::default()
        };
        let d = status_document("shop", "web-10-0-1-11-8080", &st);
        assert_eq!(
            d["metadata"],
            serde_json::json!({"name": "web-10-0-1-11-8080", "namespace": "shop"})
        );
        assert_eq!(d["status"]["healthy"], false);
        assert_eq!(d["status"]["observedGeneration"], 3);
        assert!(d.get("spec").is_none());
        assert_eq!(selector("node-1"), "ycloud.io/node=node-1");
    }
}
