//! Cluster mode: what the controller decided comes from the API server instead of the
//! status directory.
//!
//! - The pods of this node: one watch (`spec.nodeName=<node>`, metadata only: the daemon
//!   needs annotations, not specs) kept in a [`Watched`] cache. ADD answers from the cache
//!   and wakes on its change signal ([`PodSource`]).
//! - This node's management ports: a watch of the one Node (`metadata.name=<node>`), whose
//!   `ycloud.io/management-ports` annotation holds the same document as the manifest-mode
//!   node file ([`NodeAnnotationSource`]).
//! - dpu-host / dpu: `ycloud.io/vf` and `ycloud.io/vf-status` are read from the pod cache
//!   and written by JSON merge patch of that one annotation key ([`KubeExchange`]).
//!
//! Why merge patch and not server-side apply for the dpu annotations: the host and the DPU
//! daemons write different keys of the same pod, and a retried or withdrawn claim must be
//! removable. With one SSA field manager each apply would drop the key the other side
//! applied; a merge patch sets or removes (`null`) exactly the key it names and touches
//! nothing else (the controller owns `ycloud.io/network` by SSA, undisturbed).
//!
//! Every call the daemon makes is listed in [`api_calls`] (and the chart's RBAC).

pub mod api_calls;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::annotation::{AnnotationSource, PodNetwork, parse_network};
use crate::error::{CniError, code};
use crate::mgmt::{NodeNetwork, NodeSource};

/// Written by the controller on each pod (docs/pod-annotation.md).
pub const NETWORK_ANNOTATION: &str = "ycloud.io/network";
/// dpu-host: the VF given to the pod.
pub const VF_ANNOTATION: &str = "ycloud.io/vf";
/// dpu: the answer to `ycloud.io/vf`.
pub const VF_STATUS_ANNOTATION: &str = "ycloud.io/vf-status";
/// Written by the controller on each Node: the node network document (management ports).
pub const MGMT_ANNOTATION: &str = "ycloud.io/management-ports";
/// The daemon's field manager on its patches.
pub const FIELD_MANAGER: &str = "ycloud-cnid";

/// What the cache keeps of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    resource_version: String,
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct State {
    /// The first complete list has arrived.
    synced: bool,
    objects: BTreeMap<(String, String), Meta>,
    /// A relist in progress: replaces `objects` at once when complete.
    relist: Option<BTreeMap<(String, String), Meta>>,
}

/// The annotations of a watched set of objects (this node's pods, or the node), keyed by
/// namespace and name (namespace empty for Nodes), with a change signal.
#[derive(Debug)]
pub struct Watched {
    /// "pod" / "node", for messages.
    kind: &'static str,
    state: Mutex<State>,
    tx: watch::Sender<u64>,
}

fn key_of(m: &ObjectMeta) -> Option<(String, String)> {
    Some((m.namespace.clone().unwrap_or_default(), m.name.clone()?))
}

fn meta_of(m: &ObjectMeta) -> Meta {
    Meta {
        resource_version: m.resource_version.clone().unwrap_or_default(),
        annotations: m.annotations.clone().unwrap_or_default(),
    }
}

/// Whether `new` is not older than `old`. Resource versions are opaque to clients, but
/// every API server hands out etcd revisions (integers); when both parse, an older one
/// (a watch event overtaken by our own patch's answer) must not win. Otherwise: newest
/// arrival wins.
fn not_older(new: &str, old: &str) -> bool {
    match (new.parse::<u64>(), old.parse::<u64>()) {
        (Ok(n), Ok(o)) => n >= o,
        _ => true,
    }
}

impl Watched {
    pub fn new(kind: &'static str) -> Arc<Watched> {
        Arc::new(Watched {
            kind,
            state: Mutex::new(State::default()),
            tx: watch::Sender::new(0),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    fn bump(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn synced(&self) -> bool {
        self.state().synced
    }

    /// Applies one watcher event.
    pub fn apply<K>(&self, ev: Event<PartialObjectMeta<K>>) {
        {
            let mut st = self.state();
            match ev {
                Event::Init => st.relist = Some(BTreeMap::new()),
                Event::InitApply(o) => {
                    if let (Some(k), Some(buf)) = (key_of(&o.metadata), st.relist.as_mut()) {
                        buf.insert(k, meta_of(&o.metadata));
                    }
                }
                Event::InitDone => {
                    let fresh = st.relist.take().unwrap_or_default();
                    st.objects = fresh;
                    st.synced = true;
                }
                Event::Apply(o) => {
                    if let Some(k) = key_of(&o.metadata) {
                        let m = meta_of(&o.metadata);
                        let newer = st.objects.get(&k).is_none_or(|old| {
                            not_older(&m.resource_version, &old.resource_version)
                        });
                        if newer {
                            st.objects.insert(k, m);
                        }
                    }
                }
                Event::Delete(o) => {
                    if let Some(k) = key_of(&o.metadata) {
                        st.objects.remove(&k);
                    }
                }
            }
        }
        self.bump();
    }

    /// Records what our own patch returned, so the next read sees our write at once (a
    /// second ADD must see the first one's VF claim before the watch event arrives).
    fn write_through(&self, m: &ObjectMeta) {
        let Some(k) = key_of(m) else { return };
        {
            let mut st = self.state();
            let new = meta_of(m);
            if st
                .objects
                .get(&k)
                .is_none_or(|old| not_older(&new.resource_version, &old.resource_version))
            {
                st.objects.insert(k, new);
            }
        }
        self.bump();
    }

    fn not_synced(&self) -> CniError {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "the daemon has not received the first list of this node's {}s from the API server yet",
                self.kind
            ),
        )
    }

    /// One annotation of one object; `Ok(None)`: object or annotation absent. Code 11 before
    /// the first list.
    pub fn annotation(&self, ns: &str, name: &str, key: &str) -> Result<Option<String>, CniError> {
        let st = self.state();
        if !st.synced {
            return Err(self.not_synced());
        }
        Ok(st
            .objects
            .get(&(ns.to_string(), name.to_string()))
            .and_then(|m| m.annotations.get(key).cloned()))
    }

    /// `(namespace, name, value)` of every object with annotation `key`, sorted.
    pub fn all(&self, key: &str) -> Vec<(String, String, String)> {
        self.state()
            .objects
            .iter()
            .filter_map(|((ns, n), m)| {
                Some((ns.clone(), n.clone(), m.annotations.get(key)?.clone()))
            })
            .collect()
    }
}

/// Runs a metadata-only watch into `cache` until the runtime stops. Errors (API down, 403,
/// a 410 relist) are logged; the watcher retries with backoff, and the cache keeps serving
/// what it had.
fn spawn_watch<K>(api: Api<PartialObjectMeta<K>>, cfg: watcher::Config, cache: Arc<Watched>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
    PartialObjectMeta<K>: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    tokio::spawn(async move {
        let mut events = watch_stream(api, cfg).default_backoff().boxed();
        while let Some(ev) = events.next().await {
            match ev {
                Ok(e) => cache.apply(e),
                Err(e) => tracing::warn!(kind = cache.kind, error = %e, "watch failed; retrying"),
            }
        }
    });
}

/// Starts the watch of this node's pods.
pub fn watch_pods(client: Client, node: &str) -> Arc<Watched> {
    let cache = Watched::new("pod");
    let api: Api<PartialObjectMeta<Pod>> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    spawn_watch(api, cfg, cache.clone());
    cache
}

/// Starts the watch of this node's Node object.
pub fn watch_node(client: Client, node: &str) -> Arc<Watched> {
    let cache = Watched::new("node");
    let api: Api<PartialObjectMeta<Node>> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node}"));
    spawn_watch(api, cfg, cache.clone());
    cache
}

/// The pods' `ycloud.io/network` from the pod watch.
#[derive(Debug, Clone)]
pub struct PodSource {
    pub pods: Arc<Watched>,
}

impl AnnotationSource for PodSource {
    fn lookup(&self, namespace: &str, name: &str) -> Result<Option<PodNetwork>, CniError> {
        match self.pods.annotation(namespace, name, NETWORK_ANNOTATION)? {
            None => Ok(None),
            Some(v) => parse_network(
                v.as_bytes(),
                &format!("pod {namespace}/{name} annotation {NETWORK_ANNOTATION}"),
            )
            .map(Some),
        }
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.pods.changes())
    }
}

/// This node's management ports from its `ycloud.io/management-ports` annotation.
#[derive(Debug, Clone)]
pub struct NodeAnnotationSource {
    pub node: String,
    pub cache: Arc<Watched>,
}

impl NodeSource for NodeAnnotationSource {
    fn node_network(&self) -> Result<Option<NodeNetwork>, CniError> {
        if !self.cache.synced() {
            return Ok(None);
        }
        match self.cache.annotation("", &self.node, MGMT_ANNOTATION)? {
            None => Ok(Some(NodeNetwork::default())),
            Some(v) => NodeNetwork::parse(
                v.as_bytes(),
                &format!("node {} annotation {MGMT_ANNOTATION}", self.node),
            )
            .map(Some),
        }
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.cache.changes())
    }
}

/// The dpu exchange on pod annotations.
#[derive(Clone)]
pub struct KubeExchange {
    pub client: Client,
    pub pods: Arc<Watched>,
}

impl Debug for KubeExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeExchange")
            .field("pods", &self.pods.kind)
            .finish()
    }
}

/// The merge patch that sets annotation `key` to `value` (a JSON string) or removes it.
pub fn annotation_patch(key: &str, value: Option<String>) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {key: value}}})
}

impl KubeExchange {
    /// Sets (`Some`) or removes (`None`) annotation `key` of pod `ns/name` to the JSON of
    /// `value`. Removing from a pod that is gone succeeds: there is nothing left to remove.
    pub async fn put<T: Serialize>(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        value: Option<&T>,
    ) -> Result<(), CniError> {
        let text = value.map(|v| serde_json::to_string(v).expect("a plain struct serializes"));
        let removing = text.is_none();
        let patch = annotation_patch(key, text);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match api.patch_metadata(name, &pp, &Patch::Merge(&patch)).await {
            Ok(p) => {
                self.pods.write_through(&p.metadata);
                Ok(())
            }
            Err(kube::Error::Api(s)) if removing && s.code == 404 => Ok(()),
            Err(e) => Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "{} annotation {key} of pod {ns}/{name}: {e}",
                    if removing { "removing" } else { "writing" }
                ),
            )),
        }
    }

    /// Annotation `key` of pod `ns/name`, parsed.
    pub fn get<T: DeserializeOwned>(
        &self,
        ns: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<T>, CniError> {
        self.pods
            .annotation(ns, name, key)?
            .map(|v| {
                serde_json::from_str(&v).map_err(|e| {
                    CniError::new(
                        code::ANNOTATION,
                        format!("pod {ns}/{name} annotation {key}: {e}"),
                    )
                })
            })
            .transpose()
    }

    /// Every pod with annotation `key`, parsed; a malformed one is logged and skipped (one
    /// bad pod must not stop the others).
    pub fn all<T: DeserializeOwned>(&self, key: &str) -> Vec<(String, String, T)> {
        self.pods
            .all(key)
            .into_iter()
            .filter_map(|(ns, n, v)| match serde_json::from_str(&v) {
                Ok(t) => Some((ns, n, t)),
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{n}"), key, error = %e, "skipping a malformed annotation");
                    None
                }
            })
            .collect()
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.pods.changes()
    }
}

#[cfg(test)]
mod tests;
