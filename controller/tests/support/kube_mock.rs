//! A small in-memory Kubernetes API server behind kube-rs's tower-test mock service: it
//! keeps objects by path, answers get/list (a held-open watch), create, replace (with a
//! resourceVersion check: a stale write is a 409), JSON patches (applied, `test` included),
//! server-side apply and merge patches (merged; an apply of a missing object creates it; a
//! changed spec bumps the generation), deletes, records every request, and fails the
//! requests a test asks it to. The API server is the one thing these tests cannot run.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
    /// The request created the object (a server-side apply of a missing object, which the
    /// API server authorizes as a `create` as well as a `patch`).
    pub created: bool,
}

#[derive(Debug, Clone)]
struct FailRule {
    method: String,
    path_contains: String,
    code: u16,
    times: usize,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    objects: BTreeMap<String, Value>,
    rv: u64,
    fail: Vec<FailRule>,
    /// Watches are answered never: the sender is kept so the request stays open.
    held: Vec<mock::SendResponse<Response<Body>>>,
}

/// The server: clone it to share it between clients.
#[derive(Clone, Default)]
pub struct MockApi(Arc<Mutex<State>>);

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// (prefix, namespace, resource, name, subresource) of a request path.
type Parsed = (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

/// Splits `/api/v1/...` or `/apis/G/V/...` into its [`Parsed`] parts.
fn parse(path: &str) -> Option<Parsed> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, more @ ..] if !more.is_empty() => (Some((*ns).to_owned()), more),
        other => (None, other),
    };
    let s = |x: Option<&&str>| x.map(|v| (*v).to_owned());
    Some((
        prefix,
        ns,
        rest.first()?.to_string(),
        s(rest.get(1)),
        s(rest.get(2)),
    ))
}

fn object_path(prefix: &str, ns: Option<&str>, resource: &str, name: &str) -> String {
    match ns {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{resource}/{name}"),
        None => format!("{prefix}/{resource}/{name}"),
    }
}

/// Objects merge key by key; anything else is replaced.
fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (a, b) => *a = b.clone(),
    }
}

impl MockApi {
    /// A client of this server.
    pub fn client(&self) -> kube::Client {
        self.client_with_outage(Arc::new(AtomicBool::new(false)))
    }

    /// A client whose every request fails with 503 while `down` is set (a replica cut off
    /// from the API server).
    pub fn client_with_outage(&self, down: Arc<AtomicBool>) -> kube::Client {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let server = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                if down.load(Ordering::SeqCst) {
                    let (code, body) = status(503, "ServiceUnavailable", "cut off");
                    send.send_response(respond(code, &body));
                    continue;
                }
                let seen = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    content_type: parts
                        .headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                    body: serde_json::from_slice(&bytes)
                        .or_else(|_| serde_yaml::from_slice(&bytes))
                        .unwrap_or(Value::Null),
                    created: false,
                };
                match server.handle(seen) {
                    Some((code, body)) => send.send_response(respond(code, &body)),
                    None => server.0.lock().expect("state").held.push(send),
                }
            }
        });
        kube::Client::new(svc, "default")
    }

    /// Puts an object at its path (as if created), with a resourceVersion.
    pub fn put(&self, mut obj: Value) {
        let path = Self::path_of(&obj);
        let mut st = self.0.lock().expect("state");
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = st.rv.to_string().into();
        st.objects.insert(path, obj);
    }

    /// The path of an object from its apiVersion, kind (plural: lowercase + "s"), name
    /// and namespace.
    pub fn path_of(obj: &Value) -> String {
        let api = obj["apiVersion"].as_str().unwrap_or("v1");
        let prefix = if api.contains('/') {
            format!("/apis/{api}")
        } else {
            format!("/api/{api}")
        };
        let kind = obj["kind"].as_str().unwrap_or_default().to_lowercase();
        let plural = if kind.ends_with('s') {
            format!("{kind}es")
        } else {
            format!("{kind}s")
        };
        object_path(
            &prefix,
            obj["metadata"]["namespace"].as_str(),
            &plural,
            obj["metadata"]["name"].as_str().unwrap_or_default(),
        )
    }

    /// Every object, in path order.
    pub fn objects(&self) -> Vec<Value> {
        self.0
            .lock()
            .expect("state")
            .objects
            .values()
            .cloned()
            .collect()
    }

    /// Removes the object at `path` (as a deletion by someone else).
    pub fn remove(&self, path: &str) -> Option<Value> {
        self.0.lock().expect("state").objects.remove(path)
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.0.lock().expect("state").objects.get(path).cloned()
    }

    /// Fails the next `times` requests of `method` whose path contains `path_contains`.
    pub fn fail(&self, method: &str, path_contains: &str, code: u16, times: usize) {
        self.0.lock().expect("state").fail.push(FailRule {
            method: method.into(),
            path_contains: path_contains.into(),
            code,
            times,
        });
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().expect("state").seen.clone()
    }

    /// Every request so far as (method, path, query).
    pub fn requests(&self) -> Vec<(String, String, String)> {
        self.seen()
            .into_iter()
            .map(|s| (s.method, s.path, s.query))
            .collect()
    }

    pub fn clear(&self) {
        self.0.lock().expect("state").seen.clear();
    }

    pub fn lease_holder(&self, ns: &str, name: &str) -> Option<String> {
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}");
        self.get(&path)?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_owned)
    }

    /// Another writer changed the lease: a new holder, renewed now.
    pub fn set_lease_holder(&self, ns: &str, name: &str, holder: &str) {
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}");
        let mut st = self.0.lock().expect("state");
        st.rv += 1;
        let rv = st.rv.to_string();
        if let Some(l) = st.objects.get_mut(&path) {
            l["spec"]["holderIdentity"] = holder.into();
            l["spec"]["renewTime"] = "2030-01-01T00:00:00.000000Z".into();
            l["metadata"]["resourceVersion"] = rv.into();
        }
    }

    fn handle(&self, seen: Seen) -> Option<(u16, Value)> {
        let mut st = self.0.lock().expect("state");
        st.seen.push(seen.clone());
        if let Some(rule) = st.fail.iter_mut().find(|r| {
            r.times > 0 && r.method == seen.method && seen.path.contains(&r.path_contains)
        }) {
            rule.times -= 1;
            let code = rule.code;
            let reason = match code {
                409 => "Conflict",
                404 => "NotFound",
                _ => "InternalError",
            };
            return Some(status(code, reason, "failed by the test"));
        }
        let Some((prefix, ns, resource, name, sub)) = parse(&seen.path) else {
            return Some(status(404, "NotFound", "not a resource path"));
        };
        let watch = seen.query.split('&').any(|kv| kv == "watch=true");
        st.rv += 1;
        let rv = st.rv.to_string();
        match (seen.method.as_str(), name) {
            ("GET", _) if watch => None,
            ("GET", None) => {
                // A list, across namespaces unless one is given.
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(p, _)| {
                        parse(p).is_some_and(|(pp, pns, pr, pn, psub)| {
                            pp == prefix
                                && pr == resource
                                && pn.is_some()
                                && psub.is_none()
                                && (ns.is_none() || pns == ns)
                        })
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                Some((
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": rv}, "items": items}),
                ))
            }
            ("GET", Some(name)) => {
                let path = object_path(&prefix, ns.as_deref(), &resource, &name);
                match st.objects.get(&path) {
                    Some(o) => Some((200, o.clone())),
                    None => Some(status(404, "NotFound", &format!("{path} not found"))),
                }
            }
            ("POST", None) => {
                let mut obj = seen.body.clone();
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let path = object_path(&prefix, ns.as_deref(), &resource, &name);
                if st.objects.contains_key(&path) {
                    return Some(status(409, "AlreadyExists", &format!("{path} exists")));
                }
                obj["metadata"]["resourceVersion"] = rv.into();
                st.objects.insert(path, obj.clone());
                Some((201, obj))
            }
            ("PUT", Some(name)) => {
                let path = object_path(&prefix, ns.as_deref(), &resource, &name);
                let Some(cur) = st.objects.get(&path) else {
                    return Some(status(404, "NotFound", &format!("{path} not found")));
                };
                if cur["metadata"]["resourceVersion"] != seen.body["metadata"]["resourceVersion"] {
                    return Some(status(409, "Conflict", "the object has been modified"));
                }
                let mut obj = seen.body.clone();
                obj["metadata"]["resourceVersion"] = rv.into();
                st.objects.insert(path, obj.clone());
                Some((200, obj))
            }
            ("PATCH", Some(name))
                if sub.is_none()
                    && seen.content_type.starts_with("application/apply-patch")
                    && !st.objects.contains_key(&object_path(
                        &prefix,
                        ns.as_deref(),
                        &resource,
                        &name,
                    )) =>
            {
                // Server-side apply of an object that does not exist creates it.
                let path = object_path(&prefix, ns.as_deref(), &resource, &name);
                let mut obj = seen.body.clone();
                obj["metadata"]["resourceVersion"] = rv.clone().into();
                obj["metadata"]["uid"] = format!("uid-created-{rv}").into();
                obj["metadata"]["generation"] = 1.into();
                st.objects.insert(path, obj.clone());
                if let Some(last) = st.seen.last_mut() {
                    last.created = true;
                }
                Some((201, obj))
            }
            ("DELETE", Some(name)) => {
                let path = object_path(&prefix, ns.as_deref(), &resource, &name);
                match st.objects.remove(&path) {
                    Some(o) => Some((200, o)),
                    None => Some(status(404, "NotFound", &format!("{path} not found"))),
                }
            }
            ("PATCH", Some(name)) => {
                let path = object_path(&prefix, ns.as_deref(), &resource, &name);
                let Some(mut obj) = st.objects.get(&path).cloned() else {
                    return Some(status(404, "NotFound", &format!("{path} not found")));
                };
                let spec_before = obj["spec"].clone();
                if seen.content_type.starts_with("application/json-patch") {
                    // As the API server (evanphx/json-patch): `test` of a missing path
                    // against null passes.
                    let ops: Vec<Value> = seen
                        .body
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|op| {
                            !(op["op"] == "test"
                                && op["value"].is_null()
                                && op["path"]
                                    .as_str()
                                    .is_some_and(|p| obj.pointer(p).is_none()))
                        })
                        .collect();
                    let patch: json_patch::Patch = match serde_json::from_value(Value::Array(ops)) {
                        Ok(p) => p,
                        Err(e) => return Some(status(400, "BadRequest", &e.to_string())),
                    };
                    if let Err(e) = json_patch::patch(&mut obj, &patch) {
                        return Some(status(422, "Invalid", &e.to_string()));
                    }
                } else if sub.as_deref() == Some("status") {
                    merge(&mut obj["status"], &seen.body["status"]);
                } else {
                    let mut body = seen.body.clone();
                    if let Some(m) = body.as_object_mut() {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                    merge(&mut obj, &body);
                }
                // As the API server: a change of the spec is a new generation.
                if obj["spec"] != spec_before && obj["metadata"]["generation"].is_i64() {
                    let g = obj["metadata"]["generation"].as_i64().unwrap_or(0);
                    obj["metadata"]["generation"] = (g + 1).into();
                }
                obj["metadata"]["resourceVersion"] = rv.into();
                st.objects.insert(path, obj.clone());
                Some((200, obj))
            }
            _ => Some(status(405, "MethodNotAllowed", "not served by the mock")),
        }
    }
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .expect("response")
}

/// A backend no node of ours hosts, for the probes the controller runs itself: subnet
/// `a-lo` (127.0.10.0/24, in VPC `tenant-a`, so the address is a real one this test process
/// reaches on loopback) and service `shop/db` with static backend 127.0.10.1:`port` and a
/// fast TCP health check.
pub fn local_backend_objects(port: u16) -> Vec<Value> {
    let text = format!(
        r#"
apiVersion: ycloud.io/v1alpha1
kind: Subnet
metadata: {{name: a-lo, uid: uid-a-lo, generation: 1}}
spec: {{vpc: tenant-a, cidrBlocks: [127.0.10.0/24]}}
---
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {{name: db, namespace: shop, uid: uid-db, generation: 1}}
spec:
  scenarios: [ClusterIP]
  clusterIPs: [10.96.0.150]
  ports: [{{name: sql, protocol: TCP, port: 5432, targetPort: {port}}}]
  staticBackends: [{{address: 127.0.10.1}}]
  healthCheck: {{type: TCP, intervalMillis: 200, timeoutMillis: 100, failureThreshold: 2, successThreshold: 1}}
"#
    );
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect()
}
