//! NetworkProbes in cluster mode (docs/probes.md): the probes a pass wants become
//! `NetworkProbe` objects, kept by server-side apply (field manager `ycloud-controller`),
//! each owned by its YusurService (`controller: true`, `blockOwnerDeletion: true`, so the
//! garbage collector removes them with the service even if the controller is down).
//!
//! Which objects exist is read from the NetworkProbe reflector (the store already holds
//! them for their verdicts): the ones labelled `ycloud.io/managed-by=ycloud-controller`
//! that no pass wants any more are deleted. Nothing is sent for a probe whose object
//! already says what we would apply (spec, our labels, our owner reference), so a steady
//! state costs no request and no watch event. The verdicts come back on the same reflector,
//! in `.status`, written by the node daemons.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use ycloud_crds::{NetworkProbe, NetworkProbeSpec, NetworkProbeStatus};

use crate::kube_status::{FIELD_MANAGER, api_resource};
use crate::probes::{MANAGED_BY, MANAGED_BY_LABEL, NODE_LABEL, SERVICE_LABEL};

/// The labels this controller sets on a probe (and removes when they no longer apply).
const OUR_LABELS: &[&str] = &[SERVICE_LABEL, NODE_LABEL, MANAGED_BY_LABEL];

/// Why a NetworkProbe write failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeApiError {
    #[error("applying NetworkProbe {probe}")]
    Apply {
        probe: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of NetworkProbe {probe} (a probe this controller runs)")]
    Status {
        probe: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting NetworkProbe {probe}")]
    Delete {
        probe: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "NetworkProbe {probe}: YusurService {service} has no uid in the reflector, so the probe cannot name its owner (retried at the next pass)"
    )]
    NoOwner { probe: String, service: String },
}

/// The owner reference of a probe of service `service` (uid `uid`).
pub fn owner_reference(service: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "ycloud.io/v1alpha1".into(),
        kind: "YusurService".into(),
        name: service.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The server-side apply document of a desired probe: the whole object we own
/// (labels, owner reference, spec); no status (the node daemon owns that).
pub fn apply_document(p: &NetworkProbe, owner_uid: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "ycloud.io/v1alpha1",
        "kind": "NetworkProbe",
        "metadata": {
            "name": p.metadata.name,
            "namespace": p.metadata.namespace,
            "labels": p.metadata.labels,
            "ownerReferences": [owner_reference(&p.spec.service, owner_uid)],
        },
        "spec": p.spec,
    })
}

/// Whether the object as the API server has it already says everything we would apply:
/// the same spec (compared parsed, so defaults and field order do not matter), our labels
/// with our values (and none of ours that no longer applies), our owner reference.
pub fn up_to_date(current: &DynamicObject, want: &NetworkProbe, owner_uid: &str) -> bool {
    let spec_same = current
        .data
        .get("spec")
        .and_then(|s| serde_json::from_value::<NetworkProbeSpec>(s.clone()).ok())
        .is_some_and(|s| s == want.spec);
    let have = current.metadata.labels.as_ref();
    let want_labels = want.metadata.labels.as_ref();
    let labels_same = OUR_LABELS
        .iter()
        .all(|k| have.and_then(|l| l.get(*k)) == want_labels.and_then(|l| l.get(*k)));
    let owned = current
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| *o == owner_reference(&want.spec.service, owner_uid));
    spec_same && labels_same && owned
}

/// What one sync must send.
#[derive(Debug, Default)]
pub struct ProbePlan {
    /// `namespace/name` and the apply document.
    pub apply: Vec<(String, serde_json::Value)>,
    /// `namespace/name` of probes we manage that nobody wants.
    pub delete: Vec<String>,
    /// Probes that cannot be written now (their owner is not known yet).
    pub problems: Vec<ProbeApiError>,
}

/// Plans the writes that make the API server hold exactly `desired` among the probes we
/// manage. `current`: every NetworkProbe the reflector holds, by `namespace/name`;
/// `service_uid(namespace, service)`: the uid of a YusurService, if known.
pub fn plan(
    desired: &BTreeMap<String, NetworkProbe>,
    current: &BTreeMap<String, &DynamicObject>,
    service_uid: impl Fn(&str, &str) -> Option<String>,
) -> ProbePlan {
    let mut out = ProbePlan::default();
    for (key, want) in desired {
        let ns = want.metadata.namespace.as_deref().unwrap_or_default();
        let Some(uid) = service_uid(ns, &want.spec.service) else {
            out.problems.push(ProbeApiError::NoOwner {
                probe: key.clone(),
                service: format!("{ns}/{}", want.spec.service),
            });
            continue;
        };
        if current.get(key).is_some_and(|c| up_to_date(c, want, &uid)) {
            continue;
        }
        out.apply.push((key.clone(), apply_document(want, &uid)));
    }
    let wanted: BTreeSet<&String> = desired.keys().collect();
    for (key, obj) in current {
        let ours = obj
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .is_some_and(|v| v == MANAGED_BY);
        if ours && !wanted.contains(key) && obj.metadata.deletion_timestamp.is_none() {
            out.delete.push(key.clone());
        }
    }
    out
}

fn probes_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = api_resource("NetworkProbe").expect("NetworkProbe is a ycloud kind");
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Applies one probe (`key` = `namespace/name`).
pub async fn apply(
    client: &Client,
    key: &str,
    doc: &serde_json::Value,
) -> Result<(), ProbeApiError> {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    probes_api(client, ns)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(doc),
        )
        .await
        .map(|_| ())
        .map_err(|source| ProbeApiError::Apply {
            probe: key.to_owned(),
            source,
        })
}

/// The status of a probe this controller runs itself (no node hosts its backend), by
/// server-side apply on `/status` — what a node daemon does for the probes of its node.
pub async fn apply_status(
    client: &Client,
    key: &str,
    status: &NetworkProbeStatus,
) -> Result<(), ProbeApiError> {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    let doc = serde_json::json!({
        "apiVersion": "ycloud.io/v1alpha1",
        "kind": "NetworkProbe",
        "metadata": {"name": name, "namespace": ns},
        "status": status,
    });
    probes_api(client, ns)
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(doc),
        )
        .await
        .map(|_| ())
        .map_err(|source| ProbeApiError::Status {
            probe: key.to_owned(),
            source,
        })
}

/// Deletes one probe; one already gone is no error.
pub async fn delete(client: &Client, key: &str) -> Result<(), ProbeApiError> {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    match probes_api(client, ns)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(ProbeApiError::Delete {
            probe: key.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::{ProbeTarget, desired_probe, key_of};
    use ycloud_crds::{HealthCheck, ProbeBackendKind};

    fn want(timeout: u32, node: Option<&str>) -> NetworkProbe {
        let check: HealthCheck = serde_yaml::from_str(&format!(
            "{{type: TCP, intervalMillis: 500, timeoutMillis: {timeout}, failureThreshold: 2}}"
        ))
        .expect("check");
        desired_probe(
            "shop",
            "web",
            &check,
            &ProbeTarget {
                kind: ProbeBackendKind::Pod,
                name: Some("shop/web-1".into()),
                address: "10.0.1.11".parse().expect("ip"),
                node: node.map(str::to_owned),
                target_port: 8080,
            },
        )
    }

    /// The object as the API server would return it after our apply.
    fn echoed(p: &NetworkProbe, uid: &str) -> DynamicObject {
        let mut doc = apply_document(p, uid);
        doc["metadata"]["uid"] = "probe-uid".into();
        doc["metadata"]["generation"] = 1.into();
        serde_json::from_value(doc).expect("object")
    }

    #[test]
    fn the_apply_document_carries_labels_owner_and_spec_but_no_status() {
        let p = want(300, Some("node-1"));
        let doc = apply_document(&p, "uid-web");
        assert_eq!(doc["kind"], "NetworkProbe");
        assert_eq!(doc["metadata"]["name"], "web-10-0-1-11-8080");
        assert_eq!(doc["metadata"]["namespace"], "shop");
        assert_eq!(doc["metadata"]["labels"][NODE_LABEL], "node-1");
        assert_eq!(doc["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(
            doc["metadata"]["ownerReferences"],
            serde_json::json!([{"apiVersion": "ycloud.io/v1alpha1", "kind": "YusurService",
                "name": "web", "uid": "uid-web", "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(doc["spec"]["backend"]["port"], 8080);
        assert!(doc.get("status").is_none());
    }

    #[test]
    fn only_what_differs_is_applied_and_only_our_unwanted_probes_are_deleted() {
        let uid = |_: &str, s: &str| (s == "web").then(|| "uid-web".to_owned());
        let p = want(300, Some("node-1"));
        let key = key_of(&p);
        let desired = BTreeMap::from([(key.clone(), p.clone())]);

        // Not there: applied.
        let plan1 = plan(&desired, &BTreeMap::new(), uid);
        assert_eq!(plan1.apply.len(), 1);
        assert!(plan1.delete.is_empty() && plan1.problems.is_empty());

        // There as we want it: nothing.
        let same = echoed(&p, "uid-web");
        let current = BTreeMap::from([(key.clone(), &same)]);
        let plan2 = plan(&desired, &current, uid);
        assert!(plan2.apply.is_empty() && plan2.delete.is_empty());

        // A changed spec, a lost label, another owner: each is applied again.
        for stale in [
            echoed(&want(400, Some("node-1")), "uid-web"),
            echoed(&want(300, None), "uid-web"),
            echoed(&p, "uid-old-web"),
        ] {
            let current = BTreeMap::from([(key.clone(), &stale)]);
            assert_eq!(plan(&desired, &current, uid).apply.len(), 1);
        }

        // Not wanted: ours deleted, someone else's left alone.
        let mut foreign = echoed(&p, "uid-web");
        foreign
            .metadata
            .labels
            .as_mut()
            .expect("labels")
            .remove(MANAGED_BY_LABEL);
        let current = BTreeMap::from([
            ("shop/gone".to_owned(), &same),
            ("shop/theirs".to_owned(), &foreign),
        ]);
        let plan3 = plan(&BTreeMap::new(), &current, uid);
        assert_eq!(plan3.delete, vec!["shop/gone".to_owned()]);

        // A service not read back yet: a problem, not a probe without an owner.
        let plan4 = plan(&desired, &BTreeMap::new(), |_: &str, _: &str| None);
        assert!(plan4.apply.is_empty());
        assert!(
            plan4.problems[0].to_string().contains("shop/web"),
            "{}",
            plan4.problems[0]
        );
    }
}
