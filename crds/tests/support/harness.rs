//! Test harness: the three validation layers of the API, run the way the API server and the
//! controller run them.
//!
//! - schema: the CRD's openAPIV3Schema through a JSON-schema validator (draft 4, which OpenAPI
//!   3.0 schemas follow), with two Kubernetes behaviours added: unknown fields are errors (as
//!   with kubectl's default `--validate=strict`) and `x-kubernetes-list-type: set` means unique
//!   items;
//! - cel: the CRD's `x-kubernetes-validations` through kube-cel (Kubernetes CEL libraries,
//!   defaults applied first as the API server does), with the old object for transition rules;
//! - semantic: `ycloud_crds::validate` against a snapshot of the other objects.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use ycloud_crds::validate::{self, Snapshot};
use ycloud_crds::{EipGateway, NetworkProbe, Subnet, VNicIP, Vpc, YusurService};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every YAML document of a file, as JSON values.
pub fn load_docs(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `*.yaml` files of a directory, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The openAPIV3Schema of each CRD, by kind.
pub fn schemas_by_kind() -> BTreeMap<String, Value> {
    ycloud_crds::crds()
        .into_iter()
        .map(|crd| {
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("every CRD has a schema");
            (
                crd.spec.names.kind.clone(),
                serde_json::to_value(schema).expect("schema to JSON"),
            )
        })
        .collect()
}

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

/// A JSON-schema path (`/spec/ports/1/name`) in Kubernetes field notation (`spec.ports[1].name`).
fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').filter(|s| !s.is_empty()) {
        if seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Adds the two Kubernetes behaviours a JSON-schema validator lacks (see the module docs).
fn kubernetes_flavoured(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: serde_json::Map<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), kubernetes_flavoured(v)))
                .collect();
            let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !preserve
            {
                out.insert("additionalProperties".into(), json!(false));
            }
            if map.get("x-kubernetes-list-type") == Some(&json!("set")) {
                out.insert("uniqueItems".into(), json!(true));
            }
            // `properties` holds field names, not schemas: keep them as they are.
            if let Some(Value::Object(props)) = map.get("properties") {
                let props = props
                    .iter()
                    .map(|(k, v)| (k.clone(), kubernetes_flavoured(v)))
                    .collect();
                out.insert("properties".into(), Value::Object(props));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(kubernetes_flavoured).collect()),
        other => other.clone(),
    }
}

/// Schema-layer errors of a document, as `path: message`.
pub fn schema_errors(doc: &Value) -> Vec<String> {
    let schemas = schemas_by_kind();
    let Some(schema) = schemas.get(kind_of(doc)) else {
        return vec![format!("kind: unknown kind {:?}", kind_of(doc))];
    };
    let mut schema = kubernetes_flavoured(schema);
    // The root of a CRD schema may leave out the fields every object has.
    let props = schema["properties"]
        .as_object_mut()
        .expect("root has properties");
    props.insert(
        "apiVersion".into(),
        json!({"type": "string", "enum": ["ycloud.io/v1alpha1"]}),
    );
    props.insert("kind".into(), json!({"type": "string"}));
    props.insert("metadata".into(), json!({"type": "object"}));
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema of {} does not compile: {e}", kind_of(doc)));
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", field_path(e.instance_path().as_str())))
        .collect()
}

/// CEL-layer errors of a document (with `old` for transition rules), as `path: message`.
pub fn cel_errors(doc: &Value, old: Option<&Value>) -> Vec<String> {
    let schemas = schemas_by_kind();
    let Some(schema) = schemas.get(kind_of(doc)) else {
        return vec![format!("kind: unknown kind {:?}", kind_of(doc))];
    };
    match kube_core::cel::Validator::new().validate(schema, doc, old) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// Typed objects of a manifest set, for the semantic validator.
#[derive(Clone, Default)]
pub struct World {
    pub vpcs: Vec<Vpc>,
    pub subnets: Vec<Subnet>,
    pub gateways: Vec<EipGateway>,
    pub services: Vec<YusurService>,
    pub vnic_ips: Vec<VNicIP>,
    pub probes: Vec<NetworkProbe>,
    pub namespaces: Vec<(String, BTreeMap<String, String>)>,
}

fn typed<T: serde::de::DeserializeOwned>(doc: &Value) -> T {
    serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} does not deserialize: {e}\n{doc:#}", kind_of(doc)))
}

impl World {
    /// Adds a document; `Namespace`s keep only their labels.
    pub fn add(&mut self, doc: &Value) {
        match kind_of(doc) {
            "Vpc" => self.vpcs.push(typed(doc)),
            "Subnet" => self.subnets.push(typed(doc)),
            "EipGateway" => self.gateways.push(typed(doc)),
            "YusurService" => self.services.push(typed(doc)),
            "VNicIP" => self.vnic_ips.push(typed(doc)),
            "NetworkProbe" => self.probes.push(typed(doc)),
            "Namespace" => {
                let name = doc["metadata"]["name"]
                    .as_str()
                    .expect("namespace name")
                    .to_owned();
                let labels =
                    serde_json::from_value(doc["metadata"]["labels"].clone()).unwrap_or_default();
                self.namespaces.push((name, labels));
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }

    /// Every example in `examples/`.
    pub fn examples() -> Self {
        let mut world = Self::default();
        for file in yaml_files(&repo_root().join("examples")) {
            for doc in load_docs(&file) {
                world.add(&doc);
            }
        }
        world
    }

    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            vpcs: self.vpcs.iter().collect(),
            subnets: self.subnets.iter().collect(),
            gateways: self.gateways.iter().collect(),
            services: self.services.iter().collect(),
            vnic_ips: self.vnic_ips.iter().collect(),
            namespaces: self
                .namespaces
                .iter()
                .map(|(n, l)| (n.as_str(), l))
                .collect(),
            ..Default::default()
        }
    }

    /// Semantic errors of one document against this world (the document itself need not be
    /// in it), as `path: message`.
    pub fn semantic_errors(&self, doc: &Value) -> Vec<String> {
        let mut world = World::default();
        world.add(doc);
        let mut snap = self.snapshot();
        snap.vpcs.extend(&world.vpcs);
        snap.subnets.extend(&world.subnets);
        snap.gateways.extend(&world.gateways);
        snap.services.extend(&world.services);
        snap.vnic_ips.extend(&world.vnic_ips);
        let result = match kind_of(doc) {
            "Vpc" => validate::vpc(&world.vpcs[0], &snap),
            "Subnet" => validate::subnet(&world.subnets[0], &snap),
            "EipGateway" => validate::eip_gateway(&world.gateways[0], &snap),
            "YusurService" => validate::service(&world.services[0], &snap),
            "VNicIP" => validate::vnic_ip(&world.vnic_ips[0], &snap),
            "NetworkProbe" => validate::network_probe(&world.probes[0], &snap),
            "Namespace" => Ok(()),
            other => panic!("unexpected kind {other:?}"),
        };
        match result {
            Ok(()) => vec![],
            Err(errors) => errors.0.iter().map(|e| e.to_string()).collect(),
        }
    }
}
