//! The Kubernetes side of status and cleanup (feature `kube`): an object's status by
//! server-side apply of the same document the manifest mode writes to a file, the pod
//! network annotation by server-side apply, and our finalizer by JSON patches guarded by
//! a `test` operation (a concurrent change makes the patch fail instead of being lost).
//!
//! Nothing is sent when the object already says what we would write: conditions keep
//! their `lastTransitionTime` while their state holds ([`crate::status::merge_conditions`]),
//! so an unchanged object compares equal and costs no request (and no watch event).
//!
//! The loop calls these through [`crate::kube::sink::ApiSink`] (cluster mode).

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use ycloud_crds::condition::Condition;

use crate::resolve::{NETWORK_ANNOTATION, ObjectStatus, PodNetwork};
use crate::status::{Programming, merge_conditions, status_document};
use crate::store::ObjectRef;

/// The one field manager of every apply we make.
pub const FIELD_MANAGER: &str = "ycloud-controller";
/// Our finalizer: the object stays until its rows are gone from NB.
pub const FINALIZER: &str = "ycloud.io/cleanup";
/// The node annotation with the node's management ports, in the node daemon's form
/// (`{"managementPorts": [...]}`, docs/cni.md): the cluster-mode twin of the status
/// directory's `nodes/<node>.json`.
pub const MANAGEMENT_PORTS_ANNOTATION: &str = "ycloud.io/management-ports";

/// Why a Kubernetes write failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeStatusError {
    #[error("{kind} is not a ycloud kind with a status")]
    UnknownKind { kind: String },
    #[error("patching the status of {object}")]
    PatchStatus {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching the finalizers of {object}")]
    PatchFinalizers {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching the network annotation of pod {object}")]
    PatchAnnotation {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching the management-ports annotation of node {object}")]
    PatchNode {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("building a JSON patch")]
    JsonPatch(#[source] serde_json::Error),
}

impl KubeStatusError {
    /// A short label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            KubeStatusError::UnknownKind { .. } | KubeStatusError::JsonPatch(_) => "internal",
            KubeStatusError::PatchStatus { .. }
            | KubeStatusError::PatchFinalizers { .. }
            | KubeStatusError::PatchAnnotation { .. }
            | KubeStatusError::PatchNode { .. } => "kubernetes",
        }
    }
}

/// The API resource of a ycloud kind.
pub fn api_resource(kind: &str) -> Option<ApiResource> {
    Some(match kind {
        "Vpc" => ApiResource::erase::<ycloud_crds::Vpc>(&()),
        "Subnet" => ApiResource::erase::<ycloud_crds::Subnet>(&()),
        "EipGateway" => ApiResource::erase::<ycloud_crds::EipGateway>(&()),
        "VNicIP" => ApiResource::erase::<ycloud_crds::VNicIP>(&()),
        "YusurService" => ApiResource::erase::<ycloud_crds::YusurService>(&()),
        "NetworkProbe" => ApiResource::erase::<ycloud_crds::NetworkProbe>(&()),
        _ => return None,
    })
}

fn api(client: &Client, o: &ObjectRef, ar: &ApiResource) -> Api<DynamicObject> {
    match &o.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// The server-side apply document for an object's status, or `None` when its current
/// `status` (as the API server has it) already carries every field we set.
pub fn status_patch(
    o: &ObjectRef,
    current: Option<&serde_json::Value>,
    st: &ObjectStatus,
    programming: &Programming,
    generation: Option<i64>,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<serde_json::Value> {
    let previous: Vec<Condition> = current
        .and_then(|s| s.get("conditions"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let conditions = merge_conditions(previous, st, programming, generation, now);
    let doc = status_document(o, st, &conditions, generation);
    let ours = doc.get("status")?.as_object()?;
    let unchanged = ours
        .iter()
        .all(|(k, v)| current.and_then(|c| c.get(k)) == Some(v));
    (!unchanged).then_some(doc)
}

/// Applies an object's status when it changed. Returns whether a request was made.
pub async fn apply_status(
    client: &Client,
    o: &ObjectRef,
    current: Option<&serde_json::Value>,
    st: &ObjectStatus,
    programming: &Programming,
    generation: Option<i64>,
) -> Result<bool, KubeStatusError> {
    let ar = api_resource(&o.kind).ok_or_else(|| KubeStatusError::UnknownKind {
        kind: o.kind.clone(),
    })?;
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let Some(doc) = status_patch(o, current, st, programming, generation, now) else {
        return Ok(false);
    };
    api(client, o, &ar)
        .patch_status(
            &o.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&doc),
        )
        .await
        .map_err(|source| KubeStatusError::PatchStatus {
            object: o.to_string(),
            source,
        })?;
    Ok(true)
}

/// The JSON patch that adds our finalizer, or `None` when it is there. The `test` of the
/// current list makes a concurrent change fail the patch rather than be overwritten.
pub fn add_finalizer_patch(
    finalizers: Option<&[String]>,
) -> Result<Option<json_patch::Patch>, KubeStatusError> {
    let ops = match finalizers {
        Some(f) if f.iter().any(|x| x == FINALIZER) => return Ok(None),
        Some(f) if !f.is_empty() => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": f},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ]),
        _ => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]),
    };
    serde_json::from_value(ops)
        .map(Some)
        .map_err(KubeStatusError::JsonPatch)
}

/// The JSON patch that removes our finalizer (tested at its index), or `None` when it is
/// not there.
pub fn remove_finalizer_patch(
    finalizers: Option<&[String]>,
) -> Result<Option<json_patch::Patch>, KubeStatusError> {
    let Some(i) = finalizers.and_then(|f| f.iter().position(|x| x == FINALIZER)) else {
        return Ok(None);
    };
    let path = format!("/metadata/finalizers/{i}");
    serde_json::from_value(serde_json::json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]))
    .map(Some)
    .map_err(KubeStatusError::JsonPatch)
}

/// Adds (`present`) or removes our finalizer when needed. Returns whether a request was
/// made. Add it before programming an object's rows; remove it once they are gone.
pub async fn set_finalizer(
    client: &Client,
    o: &ObjectRef,
    finalizers: Option<&[String]>,
    present: bool,
) -> Result<bool, KubeStatusError> {
    let ar = api_resource(&o.kind).ok_or_else(|| KubeStatusError::UnknownKind {
        kind: o.kind.clone(),
    })?;
    let patch = if present {
        add_finalizer_patch(finalizers)?
    } else {
        remove_finalizer_patch(finalizers)?
    };
    let Some(patch) = patch else {
        return Ok(false);
    };
    api(client, o, &ar)
        .patch(&o.name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(|source| KubeStatusError::PatchFinalizers {
            object: o.to_string(),
            source,
        })?;
    Ok(true)
}

/// Applies a pod's `ycloud.io/network` annotation when it differs from `current`.
/// Returns whether a request was made.
pub async fn apply_pod_network(
    client: &Client,
    namespace: &str,
    name: &str,
    current: Option<&str>,
    net: &PodNetwork,
) -> Result<bool, KubeStatusError> {
    let value = serde_json::to_string(net).map_err(KubeStatusError::JsonPatch)?;
    let same = current
        .and_then(|c| serde_json::from_str::<PodNetwork>(c).ok())
        .is_some_and(|c| c == *net);
    if same {
        return Ok(false);
    }
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": {NETWORK_ANNOTATION: value}},
    });
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    pods.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&doc),
    )
    .await
    .map_err(|source| KubeStatusError::PatchAnnotation {
        object: format!("{namespace}/{name}"),
        source,
    })?;
    Ok(true)
}

/// Applies a node's `ycloud.io/management-ports` annotation when it differs from
/// `current`. Returns whether a request was made.
pub async fn apply_node_network(
    client: &Client,
    node: &str,
    current: Option<&str>,
    doc: &serde_json::Value,
) -> Result<bool, KubeStatusError> {
    let same = current
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .is_some_and(|c| c == *doc);
    if same {
        return Ok(false);
    }
    let value = serde_json::to_string(doc).map_err(KubeStatusError::JsonPatch)?;
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "annotations": {MANAGEMENT_PORTS_ANNOTATION: value}},
    });
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes
        .patch(
            node,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| KubeStatusError::PatchNode {
            object: node.to_owned(),
            source,
        })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    use super::*;
    use crate::resolve::{Owner, Problem};

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    fn mock_client() -> (Client, Handle) {
        let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(svc, "default"), handle)
    }

    /// Answers the next request with `reply` and hands back what was asked.
    async fn answer(
        handle: &mut Handle,
        reply: serde_json::Value,
    ) -> (Request<()>, serde_json::Value) {
        let (req, send) = handle.next_request().await.expect("a request");
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.expect("body");
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&reply).expect("json")))
                .expect("response"),
        );
        (Request::from_parts(parts, ()), json)
    }

    fn web() -> ObjectRef {
        ObjectRef::new("YusurService", Some("shop"), "web")
    }

    fn invalid() -> ObjectStatus {
        ObjectStatus {
            problem: Some(Problem {
                reason: "InvalidSpec",
                message: "spec.clusterIPs[0]: 10.99.0.1 is outside the service CIDRs".into(),
            }),
            owner: Some(Owner::Service("shop/web".into())),
            fields: serde_json::json!({"vpc": "tenant-a"}).into(),
            backends: None,
        }
    }

    fn reply_object() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "ycloud.io/v1alpha1", "kind": "YusurService",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"scenarios": ["ClusterIP"], "ports": [{"name": "http", "port": 80}]}
        })
    }

    #[tokio::test]
    async fn a_changed_status_is_applied_to_the_status_subresource_with_our_field_manager() {
        let (client, mut handle) = mock_client();
        let server = tokio::spawn(async move { answer(&mut handle, reply_object()).await });
        let sent = apply_status(
            &client,
            &web(),
            None,
            &invalid(),
            &Programming::NotAttempted,
            Some(3),
        )
        .await
        .expect("apply");
        assert!(sent);
        let (req, body) = server.await.expect("server");
        assert_eq!(req.method(), http::Method::PATCH);
        assert_eq!(
            req.uri().to_string(),
            "/apis/ycloud.io/v1alpha1/namespaces/shop/yusurservices/web/status?&force=true&fieldManager=ycloud-controller"
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        assert_eq!(body["kind"], "YusurService");
        assert_eq!(body["status"]["vpc"], "tenant-a");
        assert_eq!(body["status"]["observedGeneration"], 3);
        let ready = &body["status"]["conditions"][0];
        assert_eq!(ready["type"], "Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "InvalidSpec");
        assert!(
            ready["message"]
                .as_str()
                .expect("message")
                .starts_with("spec.clusterIPs[0]")
        );
    }

    #[tokio::test]
    async fn an_unchanged_status_sends_nothing() {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("time"),
        );
        let first = status_patch(
            &web(),
            None,
            &invalid(),
            &Programming::NotAttempted,
            Some(3),
            now,
        )
        .expect("a first patch");
        // The API server now holds what we applied: the same state again is no patch,
        // even though the clock moved.
        let current = first["status"].clone();
        let later = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_600).expect("time"),
        );
        assert!(
            status_patch(
                &web(),
                Some(&current),
                &invalid(),
                &Programming::NotAttempted,
                Some(3),
                later.clone()
            )
            .is_none()
        );
        // A new generation is a change.
        assert!(
            status_patch(
                &web(),
                Some(&current),
                &invalid(),
                &Programming::NotAttempted,
                Some(4),
                later
            )
            .is_some()
        );
        // And through the client: no request at all (the mock would hang on one).
        let (client, _handle) = mock_client();
        let sent = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            apply_status(
                &client,
                &web(),
                Some(&current),
                &invalid(),
                &Programming::NotAttempted,
                Some(3),
            ),
        )
        .await
        .expect("no request, so no wait")
        .expect("ok");
        assert!(!sent);
    }

    #[tokio::test]
    async fn the_finalizer_is_added_behind_a_test_of_the_current_list_and_removed_by_index() {
        let vpc = ObjectRef::new("Vpc", None, "tenant-a");
        let reply = serde_json::json!({
            "apiVersion": "ycloud.io/v1alpha1", "kind": "Vpc",
            "metadata": {"name": "tenant-a"}, "spec": {"serviceCIDRs": ["10.96.0.0/16"]}
        });
        let (client, mut handle) = mock_client();
        let r = reply.clone();
        let server = tokio::spawn(async move { answer(&mut handle, r).await });
        let other = vec!["someone.else/keep".to_owned()];
        assert!(
            set_finalizer(&client, &vpc, Some(&other), true)
                .await
                .expect("add")
        );
        let (req, body) = server.await.expect("server");
        assert_eq!(req.uri().path(), "/apis/ycloud.io/v1alpha1/vpcs/tenant-a");
        assert_eq!(req.headers()["content-type"], "application/json-patch+json");
        assert_eq!(
            body,
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["someone.else/keep"]},
                {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
            ])
        );

        let (client, mut handle) = mock_client();
        let server = tokio::spawn(async move { answer(&mut handle, reply).await });
        let both = vec!["someone.else/keep".to_owned(), FINALIZER.to_owned()];
        assert!(
            set_finalizer(&client, &vpc, Some(&both), false)
                .await
                .expect("remove")
        );
        let (_, body) = server.await.expect("server");
        assert_eq!(
            body,
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ])
        );
        // Nothing to do either way: no request.
        let (client, _handle) = mock_client();
        assert!(
            !set_finalizer(&client, &vpc, Some(&both), true)
                .await
                .expect("present")
        );
        assert!(
            !set_finalizer(&client, &vpc, None, false)
                .await
                .expect("absent")
        );
    }

    #[tokio::test]
    async fn the_pod_network_annotation_is_applied_once() {
        let net: PodNetwork = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../examples/annotations/pod-network.json"),
            )
            .expect("fixture"),
        )
        .expect("parse");
        let reply = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop"}, "spec": {"containers": []}
        });
        let (client, mut handle) = mock_client();
        let server = tokio::spawn(async move { answer(&mut handle, reply).await });
        assert!(
            apply_pod_network(&client, "shop", "web-1", None, &net)
                .await
                .expect("apply")
        );
        let (req, body) = server.await.expect("server");
        assert_eq!(
            req.uri().to_string(),
            "/api/v1/namespaces/shop/pods/web-1?&fieldManager=ycloud-controller"
        );
        let sent: PodNetwork = serde_json::from_str(
            body["metadata"]["annotations"][NETWORK_ANNOTATION]
                .as_str()
                .expect("annotation"),
        )
        .expect("parse");
        assert_eq!(sent, net);
        let current = serde_json::to_string(&net).expect("json");
        let (client, _handle) = mock_client();
        assert!(
            !apply_pod_network(&client, "shop", "web-1", Some(&current), &net)
                .await
                .expect("same")
        );
    }
}
