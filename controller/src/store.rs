//! The objects the controller works from, whatever their source (a manifest directory
//! now; the API server's reflectors later): ycloud's CRDs, Pods, Namespaces, Nodes and
//! KubeVirt VirtualMachineInstances.
//!
//! Parsing is per document: a document that can't be read is an error of its own (with the
//! file and document number), never a reason to drop the others.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use serde::Deserialize;
use ycloud_crds::{EipGateway, NetworkProbe, Subnet, VNicIP, Vpc, YusurService};

/// Why one document was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} document {doc}: {what}")]
pub struct LoadError {
    pub path: PathBuf,
    /// 1-based.
    pub doc: usize,
    pub what: String,
    /// `Kind/namespace/name` when the document got that far, so its status can say why.
    pub object: Option<ObjectRef>,
}

/// Which object: kind, namespace (if namespaced), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &str, namespace: Option<&str>, name: &str) -> Self {
        ObjectRef {
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// The reference of the object stored under `key` (`namespace/name` or `name`).
    pub fn from_key(kind: &str, key: &str) -> Self {
        match key.split_once('/') {
            Some((ns, name)) => ObjectRef::new(kind, Some(ns), name),
            None => ObjectRef::new(kind, None, key),
        }
    }

    /// `namespace/name` or `name`.
    pub fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.key())
    }
}

/// A KubeVirt `VirtualMachineInstance`, reduced to what backend selection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vmi {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `status.interfaces[*].ipAddresses` (or `ipAddress`).
    pub ips: Vec<IpAddr>,
}

/// Calls `$arm!("Kind", field)` for every kind the store holds.
macro_rules! every_kind {
    ($arm:ident) => {
        $arm!("Vpc", vpcs);
        $arm!("Subnet", subnets);
        $arm!("EipGateway", gateways);
        $arm!("VNicIP", vnics);
        $arm!("YusurService", services);
        $arm!("NetworkProbe", probes);
        $arm!("Pod", pods);
        $arm!("Namespace", namespaces);
        $arm!("Node", nodes);
        $arm!("VirtualMachineInstance", vmis);
    };
}

/// `$arm!(field)` for the field holding objects of `$kind`, `$default` for another kind.
macro_rules! dispatch {
    ($kind:expr, $arm:ident, $default:expr) => {
        match $kind {
            "Vpc" => $arm!(vpcs),
            "Subnet" => $arm!(subnets),
            "EipGateway" => $arm!(gateways),
            "VNicIP" => $arm!(vnics),
            "YusurService" => $arm!(services),
            "NetworkProbe" => $arm!(probes),
            "Pod" => $arm!(pods),
            "Namespace" => $arm!(namespaces),
            "Node" => $arm!(nodes),
            "VirtualMachineInstance" => $arm!(vmis),
            _ => $default,
        }
    };
}

/// Every object, by `namespace/name` (or `name`) per kind.
#[derive(Debug, Clone, Default)]
pub struct Store {
    pub vpcs: BTreeMap<String, Vpc>,
    pub subnets: BTreeMap<String, Subnet>,
    pub gateways: BTreeMap<String, EipGateway>,
    pub vnics: BTreeMap<String, VNicIP>,
    pub services: BTreeMap<String, YusurService>,
    pub probes: BTreeMap<String, NetworkProbe>,
    pub pods: BTreeMap<String, Pod>,
    pub namespaces: BTreeMap<String, Namespace>,
    pub nodes: BTreeMap<String, Node>,
    pub vmis: BTreeMap<String, Vmi>,
}

const YCLOUD_API: &str = "ycloud.io/v1alpha1";

fn meta_ref(doc: &serde_json::Value, kind: &str) -> Option<ObjectRef> {
    let name = doc.pointer("/metadata/name")?.as_str()?;
    let ns = doc.pointer("/metadata/namespace").and_then(|v| v.as_str());
    Some(ObjectRef::new(kind, ns, name))
}

impl Store {
    /// Number of objects of every kind.
    pub fn len(&self) -> usize {
        self.vpcs.len()
            + self.subnets.len()
            + self.gateways.len()
            + self.vnics.len()
            + self.services.len()
            + self.probes.len()
            + self.pods.len()
            + self.namespaces.len()
            + self.nodes.len()
            + self.vmis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `metadata.generation` of an object, when it has one (objects from a manifest
    /// directory usually don't).
    pub fn generation(&self, o: &ObjectRef) -> Option<i64> {
        let k = o.key();
        match o.kind.as_str() {
            "Vpc" => self.vpcs.get(&k)?.metadata.generation,
            "Subnet" => self.subnets.get(&k)?.metadata.generation,
            "EipGateway" => self.gateways.get(&k)?.metadata.generation,
            "VNicIP" => self.vnics.get(&k)?.metadata.generation,
            "YusurService" => self.services.get(&k)?.metadata.generation,
            "NetworkProbe" => self.probes.get(&k)?.metadata.generation,
            "Pod" => self.pods.get(&k)?.metadata.generation,
            "Node" => self.nodes.get(&k)?.metadata.generation,
            _ => None,
        }
    }

    /// Every object, by reference.
    pub fn refs(&self) -> Vec<ObjectRef> {
        let mut out = Vec::with_capacity(self.len());
        macro_rules! arm {
            ($kind:literal, $f:ident) => {
                out.extend(self.$f.keys().map(|k| ObjectRef::from_key($kind, k)))
            };
        }
        every_kind!(arm);
        out
    }

    /// Removes one object. Returns whether it was there.
    pub fn remove(&mut self, o: &ObjectRef) -> bool {
        let k = o.key();
        macro_rules! arm {
            ($f:ident) => {
                self.$f.remove(&k).is_some()
            };
        }
        dispatch!(o.kind.as_str(), arm, false)
    }

    /// Whether `o` is the same in both stores (equal, or absent from both).
    pub fn same(&self, other: &Store, o: &ObjectRef) -> bool {
        let k = o.key();
        macro_rules! arm {
            ($f:ident) => {
                self.$f.get(&k) == other.$f.get(&k)
            };
        }
        dispatch!(o.kind.as_str(), arm, true)
    }

    /// Moves `o` from `from` into this store (removes it here when `from` lacks it).
    pub fn take_from(&mut self, from: &mut Store, o: &ObjectRef) {
        let k = o.key();
        macro_rules! arm {
            ($f:ident) => {
                match from.$f.remove(&k) {
                    Some(v) => {
                        self.$f.insert(k, v);
                    }
                    None => {
                        self.$f.remove(&k);
                    }
                }
            };
        }
        dispatch!(o.kind.as_str(), arm, ())
    }

    /// The objects added, removed or changed between this store and `other` (cluster
    /// mode: its reflectors hand over a whole new store; one comparison per object is
    /// far cheaper than resolving every object again).
    pub fn diff(&self, other: &Store) -> BTreeSet<ObjectRef> {
        let mut out = BTreeSet::new();
        fn side<T: PartialEq>(
            kind: &str,
            a: &BTreeMap<String, T>,
            b: &BTreeMap<String, T>,
            out: &mut BTreeSet<ObjectRef>,
        ) {
            for (k, v) in a {
                if b.get(k) != Some(v) {
                    out.insert(ObjectRef::from_key(kind, k));
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.insert(ObjectRef::from_key(kind, k));
            }
        }
        macro_rules! arm {
            ($kind:literal, $f:ident) => {
                side($kind, &self.$f, &other.$f, &mut out)
            };
        }
        every_kind!(arm);
        out
    }

    /// Loads every document of one YAML text; `path` only names it in errors.
    pub fn load_yaml(&mut self, path: &Path, text: &str) -> Vec<LoadError> {
        self.load_yaml_documents(path, text).0
    }

    /// [`Store::load_yaml`], also saying which object each document of the stream defined
    /// (`None`: an empty document, or one with an error), in the stream's order: one parser
    /// for the whole text, where parsing document by document starts a parser (and its
    /// buffers) for each.
    pub fn load_yaml_documents(
        &mut self,
        path: &Path,
        text: &str,
    ) -> (Vec<LoadError>, Vec<Option<ObjectRef>>) {
        let mut errors = Vec::new();
        let mut objects = Vec::new();
        for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let doc = i + 1;
            let err = |what: String, object: Option<ObjectRef>| LoadError {
                path: path.to_owned(),
                doc,
                what,
                object,
            };
            let value = match serde_json::Value::deserialize(de) {
                Ok(serde_json::Value::Null) => {
                    objects.push(None);
                    continue;
                }
                Ok(v) => v,
                Err(e) => {
                    errors.push(err(format!("not YAML: {e}"), None));
                    // A syntax error ends the stream: the parser can't resync.
                    break;
                }
            };
            match self.insert(value) {
                Ok(o) => objects.push(Some(o)),
                Err(e) => {
                    objects.push(None);
                    errors.push(err(e.0, e.1));
                }
            }
        }
        (errors, objects)
    }

    /// Inserts one object given as JSON (the Kubernetes source's way in: an object of its
    /// reflectors). The error says why it does not parse and, when it got that far, which
    /// object it is.
    pub fn insert_object(
        &mut self,
        doc: serde_json::Value,
    ) -> Result<(), (String, Option<ObjectRef>)> {
        self.insert(doc).map(drop)
    }

    /// Inserts one parsed document.
    fn insert(&mut self, doc: serde_json::Value) -> Result<ObjectRef, (String, Option<ObjectRef>)> {
        let api = doc
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let kind = doc
            .get("kind")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ("no kind".to_owned(), None))?
            .to_owned();
        let oref = meta_ref(&doc, &kind).ok_or_else(|| ("no metadata.name".to_owned(), None))?;
        let key = oref.key();
        fn parse<T: serde::de::DeserializeOwned>(
            doc: serde_json::Value,
            oref: &ObjectRef,
        ) -> Result<T, (String, Option<ObjectRef>)> {
            from_json(doc).map_err(|e| (format!("{oref}: {e}"), Some(oref.clone())))
        }
        let namespaced = |oref: &ObjectRef| -> Result<(), (String, Option<ObjectRef>)> {
            if oref.namespace.is_none() {
                return Err((
                    format!("{oref}: metadata.namespace is required"),
                    Some(oref.clone()),
                ));
            }
            Ok(())
        };
        match (api.as_str(), kind.as_str()) {
            (YCLOUD_API, "Vpc") => {
                self.vpcs.insert(key, parse(doc, &oref)?);
            }
            (YCLOUD_API, "Subnet") => {
                self.subnets.insert(key, parse(doc, &oref)?);
            }
            (YCLOUD_API, "EipGateway") => {
                self.gateways.insert(key, parse(doc, &oref)?);
            }
            (YCLOUD_API, "VNicIP") => {
                namespaced(&oref)?;
                self.vnics.insert(key, parse(doc, &oref)?);
            }
            (YCLOUD_API, "YusurService") => {
                namespaced(&oref)?;
                self.services.insert(key, parse(doc, &oref)?);
            }
            (YCLOUD_API, "NetworkProbe") => {
                namespaced(&oref)?;
                self.probes.insert(key, parse(doc, &oref)?);
            }
            ("v1", "Pod") => {
                namespaced(&oref)?;
                self.pods.insert(key, parse(doc, &oref)?);
            }
            ("v1", "Namespace") => {
                self.namespaces.insert(key, parse(doc, &oref)?);
            }
            ("v1", "Node") => {
                self.nodes.insert(key, parse(doc, &oref)?);
            }
            (api, "VirtualMachineInstance") if api.starts_with("kubevirt.io/") => {
                namespaced(&oref)?;
                let vmi = vmi(&doc, &oref);
                self.vmis.insert(key, vmi);
            }
            (api, kind) => {
                return Err((format!("unknown kind {kind:?} of {api:?}"), Some(oref)));
            }
        }
        Ok(oref)
    }
}

/// Deserializes one typed object; the message is serde's (it names the bad value).
fn from_json<T: serde::de::DeserializeOwned>(doc: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(doc).map_err(|e| e.to_string())
}

fn vmi(doc: &serde_json::Value, oref: &ObjectRef) -> Vmi {
    let labels = doc
        .pointer("/metadata/labels")
        .and_then(|l| l.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let mut ips = Vec::new();
    for iface in doc
        .pointer("/status/interfaces")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        let listed = iface
            .get("ipAddresses")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .chain(iface.get("ipAddress"));
        for ip in listed.filter_map(|v| v.as_str()?.parse::<IpAddr>().ok()) {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    Vmi {
        namespace: oref.namespace.clone().unwrap_or_default(),
        name: oref.name.clone(),
        labels,
        ips,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_manifest_loads_without_errors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut store = Store::default();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("examples")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for f in &files {
            let text = std::fs::read_to_string(f).expect("read");
            let errors = store.load_yaml(f, &text);
            assert!(errors.is_empty(), "{errors:?}");
        }
        assert_eq!(store.vpcs.len(), 4);
        assert_eq!(store.subnets.len(), 5);
        assert!(store.services.contains_key("shop/web"));
        assert!(store.namespaces.contains_key("shop"));
        assert!(store.probes.contains_key("shop/checkout-10-0-1-15"));
    }

    #[test]
    fn a_bad_document_is_reported_with_its_place_and_the_others_still_load() {
        let text = "apiVersion: ycloud.io/v1alpha1\nkind: Vpc\nmetadata: {name: a}\nspec: {serviceCIDRs: [10.96.0.0/16]}\n---\n\
                    apiVersion: ycloud.io/v1alpha1\nkind: Vpc\nmetadata: {name: b}\nspec: {serviceCIDRs: [not-a-cidr]}\n---\n\
                    apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n---\n\
                    apiVersion: ycloud.io/v1alpha1\nkind: YusurService\nmetadata: {name: s}\nspec: {scenarios: [ClusterIP], ports: [{name: p, port: 80}]}\n";
        let mut store = Store::default();
        let errors = store.load_yaml(Path::new("x.yaml"), text);
        assert_eq!(store.vpcs.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(errors[0].doc, 2);
        assert!(
            errors[0]
                .to_string()
                .starts_with("x.yaml document 2: Vpc b:"),
            "{}",
            errors[0]
        );
        assert_eq!(
            errors[0].object,
            Some(ObjectRef::new("Vpc", None, "b")),
            "the status of b can say why"
        );
        assert!(
            errors[1].what.contains("unknown kind \"Widget\""),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].what.contains("metadata.namespace is required"),
            "{}",
            errors[2]
        );
    }

    #[test]
    fn a_vmi_yields_its_labels_and_interface_addresses() {
        let text = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: vm, namespace: legacy, labels: {app: db}}\n\
                    status: {interfaces: [{ipAddress: 10.0.2.40, ipAddresses: [10.0.2.40, 'fd00::40']}]}\n";
        let mut store = Store::default();
        assert!(store.load_yaml(Path::new("vm.yaml"), text).is_empty());
        let vmi = &store.vmis["legacy/vm"];
        assert_eq!(vmi.labels["app"], "db");
        assert_eq!(vmi.ips.len(), 2);
    }
}
