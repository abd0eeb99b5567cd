//! The Kubernetes source: a reflector (kube::runtime watcher + reflector store) per kind,
//! read into the same [`Store`] the manifest directory fills, so resolution, planning and
//! status are shared: only the source differs.
//!
//! Objects are watched as `DynamicObject`s and parsed one by one: a typed watch would fail
//! its whole list on one object that does not parse (an old version stored before a schema
//! change, a field edited by hand); here that object is logged, gets an `InvalidSpec`
//! status, and its owner's rows are kept (as an unreadable manifest is), while every other
//! object loads.
//!
//! KubeVirt is optional: its `VirtualMachineInstance` CRD is looked for at start and every
//! `crd_check` after, and its reflector starts when it appears.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::kube_status::{FINALIZER, api_resource};
use crate::resolve::Owner;
use crate::store::{ObjectRef, Store};

/// The kinds whose deletion must remove NB rows: each is an NB owner, carries our
/// finalizer, and stays until its rows are gone.
pub const FINALIZER_KINDS: &[&str] = &["Vpc", "EipGateway", "YusurService"];

/// The CRD whose presence turns on the VM reflector.
pub const VMI_CRD: &str = "virtualmachineinstances.kubevirt.io";

/// The NB owner of an object of a [`FINALIZER_KINDS`] kind.
pub fn owner_of(o: &ObjectRef) -> Option<Owner> {
    match o.kind.as_str() {
        "Vpc" => Some(Owner::Vpc(o.name.clone())),
        "EipGateway" => Some(Owner::EipGateway(o.name.clone())),
        "YusurService" => Some(Owner::Service(o.key())),
        _ => None,
    }
}

/// The kinds watched from the start.
pub fn watched_kinds() -> Vec<ApiResource> {
    let mut out: Vec<ApiResource> = [
        "Vpc",
        "Subnet",
        "EipGateway",
        "VNicIP",
        "YusurService",
        "NetworkProbe",
    ]
    .iter()
    .filter_map(|k| api_resource(k))
    .collect();
    out.push(ApiResource::erase::<Pod>(&()));
    out.push(ApiResource::erase::<Namespace>(&()));
    out.push(ApiResource::erase::<Node>(&()));
    out
}

/// KubeVirt's `VirtualMachineInstance`.
pub fn vmi_resource() -> ApiResource {
    ApiResource {
        group: "kubevirt.io".into(),
        version: "v1".into(),
        api_version: "kubevirt.io/v1".into(),
        kind: "VirtualMachineInstance".into(),
        plural: "virtualmachineinstances".into(),
    }
}

/// Change counter and wake-up shared by the reflector tasks and the loop.
#[derive(Debug, Default)]
struct Shared {
    version: AtomicU64,
    notify: Notify,
}

impl Shared {
    fn bump(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

struct Kind {
    ar: ApiResource,
    reader: reflector::Store<DynamicObject>,
    /// Kept only when fed by hand ([`KubeSource::manual`]); a watcher owns it otherwise.
    writer: Option<Writer<DynamicObject>>,
    synced: Arc<AtomicBool>,
}

/// What one read of the reflectors gives.
#[derive(Debug, Default)]
pub struct KubeRead {
    pub store: Store,
    /// Objects that did not parse, with why; their rows are kept.
    pub problems: Vec<(Option<ObjectRef>, String)>,
    pub broken: BTreeSet<ObjectRef>,
}

/// The reflectors and the last read of them.
pub struct KubeSource {
    kinds: Vec<Kind>,
    shared: Arc<Shared>,
    seen: u64,
    new_kinds: Option<mpsc::UnboundedReceiver<Kind>>,
    /// Every object of the last read, by reference (for status, finalizers, annotations).
    objects: BTreeMap<ObjectRef, Arc<DynamicObject>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field(
                "kinds",
                &self.kinds.iter().map(|k| &k.ar.kind).collect::<Vec<_>>(),
            )
            .field("objects", &self.objects.len())
            .finish()
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A kind's reader and the future that runs its reflector.
fn make_kind(
    client: &Client,
    ar: ApiResource,
    shared: &Arc<Shared>,
) -> (Kind, impl std::future::Future<Output = ()> + Send + 'static) {
    let writer = Writer::new(ar.clone());
    let reader = writer.as_reader();
    let synced = Arc::new(AtomicBool::new(false));
    let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    let (flag, shared2, kind) = (synced.clone(), shared.clone(), ar.kind.clone());
    let task = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::InitDone) => {
                    flag.store(true, Ordering::SeqCst);
                    tracing::info!(%kind, "watch synced");
                }
                Ok(_) => {}
                // The watcher recovers by itself (relist, with backoff).
                Err(e) => tracing::warn!(%kind, error = %e, "watch error"),
            }
            shared2.bump();
        }
    };
    (
        Kind {
            ar,
            reader,
            writer: None,
            synced,
        },
        task,
    )
}

impl KubeSource {
    /// Starts a reflector per kind and the KubeVirt detector.
    pub fn start(client: Client, crd_check: Duration) -> Self {
        let shared = Arc::new(Shared::default());
        let mut kinds = Vec::new();
        let mut tasks = Vec::new();
        for ar in watched_kinds() {
            let (k, run) = make_kind(&client, ar, &shared);
            kinds.push(k);
            tasks.push(tokio::spawn(run));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let shared2 = shared.clone();
        tasks.push(tokio::spawn(async move {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            loop {
                match crds.get_opt(VMI_CRD).await {
                    Ok(Some(_)) => {
                        tracing::info!("KubeVirt found: watching VirtualMachineInstances");
                        let (k, run) = make_kind(&client, vmi_resource(), &shared2);
                        let _ = tx.send(k);
                        // Run in this task, which the source aborts when dropped.
                        run.await;
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(crd = VMI_CRD, error = %e, "looking for KubeVirt"),
                }
                tokio::time::sleep(crd_check).await;
            }
        }));
        KubeSource {
            kinds,
            shared,
            seen: 0,
            new_kinds: Some(rx),
            objects: BTreeMap::new(),
            tasks,
        }
    }

    /// A source fed by hand ([`KubeSource::apply`], [`KubeSource::delete`]) with every
    /// kind (VMIs included) synced: for tests and tools.
    pub fn manual() -> Self {
        let shared = Arc::new(Shared::default());
        let mut kinds = Vec::new();
        for ar in watched_kinds().into_iter().chain([vmi_resource()]) {
            let writer = Writer::new(ar.clone());
            kinds.push(Kind {
                ar,
                reader: writer.as_reader(),
                writer: Some(writer),
                synced: Arc::new(AtomicBool::new(true)),
            });
        }
        shared.bump();
        KubeSource {
            kinds,
            shared,
            seen: 0,
            new_kinds: None,
            objects: BTreeMap::new(),
            tasks: Vec::new(),
        }
    }

    fn writer_of(&mut self, obj: &DynamicObject) -> Option<&mut Writer<DynamicObject>> {
        let kind = obj.types.as_ref()?.kind.clone();
        self.kinds
            .iter_mut()
            .find(|k| k.ar.kind == kind)?
            .writer
            .as_mut()
    }

    /// Adds or replaces an object (manual sources only; `types` names its kind).
    pub fn apply(&mut self, obj: DynamicObject) {
        if let Some(w) = self.writer_of(&obj) {
            w.apply_watcher_event(&watcher::Event::Apply(obj));
            self.shared.bump();
        }
    }

    /// Removes an object (manual sources only).
    pub fn delete(&mut self, obj: DynamicObject) {
        if let Some(w) = self.writer_of(&obj) {
            w.apply_watcher_event(&watcher::Event::Delete(obj));
            self.shared.bump();
        }
    }

    /// Resolves when a reflector saw something (maybe already read).
    pub async fn changed(&self) {
        self.shared.notify.notified().await;
    }

    /// Every kind has finished its first list.
    pub fn is_synced(&self) -> bool {
        self.kinds.iter().all(|k| k.synced.load(Ordering::SeqCst))
    }

    /// The object as the API server last sent it.
    pub fn object(&self, o: &ObjectRef) -> Option<&DynamicObject> {
        self.objects.get(o).map(|a| a.as_ref())
    }

    /// Every object of `kind` of the last read, by `namespace/name` (or `name`).
    pub fn objects_of(&self, kind: &str) -> BTreeMap<String, &DynamicObject> {
        self.objects
            .iter()
            .filter(|(o, _)| o.kind == kind)
            .map(|(o, obj)| (o.key(), obj.as_ref()))
            .collect()
    }

    /// Objects of the [`FINALIZER_KINDS`] being deleted that still carry our finalizer.
    pub fn deleting(&self) -> Vec<ObjectRef> {
        self.objects
            .iter()
            .filter(|(o, obj)| {
                FINALIZER_KINDS.contains(&o.kind.as_str())
                    && obj.metadata.deletion_timestamp.is_some()
                    && has_finalizer(obj)
            })
            .map(|(o, _)| o.clone())
            .collect()
    }

    /// Objects of the [`FINALIZER_KINDS`] that are not being deleted and lack our finalizer.
    pub fn needs_finalizer(&self) -> Vec<ObjectRef> {
        self.objects
            .iter()
            .filter(|(o, obj)| {
                FINALIZER_KINDS.contains(&o.kind.as_str())
                    && obj.metadata.deletion_timestamp.is_none()
                    && !has_finalizer(obj)
            })
            .map(|(o, _)| o.clone())
            .collect()
    }

    /// Reads the reflectors into a [`Store`] when something changed since the last read
    /// and every kind is synced; `None` otherwise.
    pub fn poll(&mut self) -> Option<KubeRead> {
        if let Some(rx) = &mut self.new_kinds {
            while let Ok(k) = rx.try_recv() {
                self.kinds.push(k);
            }
        }
        let v = self.shared.version.load(Ordering::SeqCst);
        if v == self.seen || !self.is_synced() {
            return None;
        }
        self.seen = v;
        let mut read = KubeRead::default();
        self.objects.clear();
        for k in &self.kinds {
            for obj in k.reader.state() {
                let Some(name) = obj.metadata.name.clone() else {
                    continue;
                };
                let oref = ObjectRef::new(&k.ar.kind, obj.metadata.namespace.as_deref(), &name);
                self.objects.insert(oref.clone(), obj.clone());
                // A deleted owner is left out, so the pass removes its rows; the finalizer
                // keeps the object until then.
                if FINALIZER_KINDS.contains(&k.ar.kind.as_str())
                    && obj.metadata.deletion_timestamp.is_some()
                {
                    continue;
                }
                let mut doc = match serde_json::to_value(obj.as_ref()) {
                    Ok(d) => d,
                    Err(e) => {
                        read.problems.push((Some(oref.clone()), e.to_string()));
                        read.broken.insert(oref);
                        continue;
                    }
                };
                // List items may come without apiVersion/kind: the reflector says which.
                doc["apiVersion"] = k.ar.api_version.clone().into();
                doc["kind"] = k.ar.kind.clone().into();
                if let Err((what, object)) = read.store.insert_object(doc) {
                    tracing::warn!(object = %oref, error = %what, "object skipped: it does not parse");
                    read.broken
                        .insert(object.clone().unwrap_or_else(|| oref.clone()));
                    read.problems.push((object.or(Some(oref)), what));
                }
            }
        }
        Some(read)
    }
}

fn has_finalizer(obj: &DynamicObject) -> bool {
    obj.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}
