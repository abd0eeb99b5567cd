//! The Kubernetes API calls the controller makes: the code's side of
//! `charts/ycloud/api-calls.yaml` (the chart's RBAC is checked against that file).
//!
//! `controller/tests/kube_api_calls.rs` proves the three agree: this table equals the
//! file's `controller:` section, and every request the tower-test scenarios observe
//! (method + path → group/resource/verb by [`classify`]) is in the table, and every entry
//! of the table is observed. A new call in code fails that test until it is listed here,
//! in the file and in `templates/rbac.yaml`.

/// Where a grant applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// A ClusterRole.
    Cluster,
    /// A Role in the namespace the chart is installed into (the Lease).
    ReleaseNamespace,
}

impl Scope {
    /// The spelling of api-calls.yaml.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Cluster => "cluster",
            Scope::ReleaseNamespace => "release-namespace",
        }
    }
}

/// One entry: these verbs on these resources of one API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCall {
    /// `""` is the core API.
    pub group: &'static str,
    /// `resource` or `resource/subresource`.
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    /// Which code makes the call.
    pub why: &'static str,
}

const YCLOUD_KINDS: &[&str] = &[
    "vpcs",
    "subnets",
    "eipgateways",
    "vnicips",
    "yusurservices",
    "networkprobes",
];

/// Every call the controller makes.
pub const CONTROLLER: &[ApiCall] = &[
    ApiCall {
        group: "ycloud.io",
        resources: YCLOUD_KINDS,
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        why: "kube::source: a reflector per kind",
    },
    ApiCall {
        group: "ycloud.io",
        resources: &["vpcs", "eipgateways", "yusurservices"],
        verbs: &["patch"],
        scope: Scope::Cluster,
        why: "kube_status::set_finalizer: ycloud.io/cleanup on the kinds that own NB rows",
    },
    ApiCall {
        group: "ycloud.io",
        resources: &["networkprobes"],
        verbs: &["create", "patch", "delete"],
        scope: Scope::Cluster,
        why: "kube::probes: one NetworkProbe per backend by server-side apply (an apply that creates the object is authorized as a create too), deletion of ours nobody wants",
    },
    ApiCall {
        group: "ycloud.io",
        resources: &[
            "vpcs/status",
            "subnets/status",
            "eipgateways/status",
            "vnicips/status",
            "yusurservices/status",
        ],
        verbs: &["patch"],
        scope: Scope::Cluster,
        why: "kube_status::apply_status: server-side apply of the status",
    },
    ApiCall {
        group: "ycloud.io",
        resources: &["networkprobes/status"],
        verbs: &["patch"],
        scope: Scope::Cluster,
        why: "kube::probes::apply_status: the verdicts of the probes this controller runs (backends no node of ours hosts)",
    },
    ApiCall {
        group: "",
        resources: &["pods"],
        verbs: &["list", "watch", "patch"],
        scope: Scope::Cluster,
        why: "kube::source (backends, IPAM) and kube_status::apply_pod_network",
    },
    ApiCall {
        group: "",
        resources: &["namespaces"],
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        why: "kube::source: namespace selectors and Subnet binding",
    },
    ApiCall {
        group: "",
        resources: &["nodes"],
        verbs: &["list", "watch", "patch"],
        scope: Scope::Cluster,
        why: "kube::source and kube_status::apply_node_network (management ports)",
    },
    ApiCall {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        scope: Scope::Cluster,
        why: "kube::sink: kube::runtime::events::Recorder (a repeat is a patch of the series)",
    },
    ApiCall {
        group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "create", "update"],
        scope: Scope::ReleaseNamespace,
        why: "kube::lease: leader election",
    },
    ApiCall {
        group: "kubevirt.io",
        resources: &["virtualmachineinstances"],
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        why: "kube::source: VM backends, once KubeVirt is found",
    },
    ApiCall {
        group: "apiextensions.k8s.io",
        resources: &["customresourcedefinitions"],
        verbs: &["get"],
        scope: Scope::Cluster,
        why: "kube::source: is KubeVirt's VirtualMachineInstance CRD installed",
    },
];

/// One grant: (scope, group, resource, verb).
pub type Grant = (Scope, String, String, String);

/// The table expanded to single grants.
pub fn grants(table: &[ApiCall]) -> std::collections::BTreeSet<Grant> {
    let mut out = std::collections::BTreeSet::new();
    for c in table {
        for r in c.resources {
            for v in c.verbs {
                out.insert((
                    c.scope,
                    c.group.to_owned(),
                    (*r).to_owned(),
                    (*v).to_owned(),
                ));
            }
        }
    }
    out
}

/// What one HTTP request to the API server needs: (group, resource[/subresource], verb).
/// `None` for a path that is not a resource request.
pub fn classify(method: &str, path: &str, query: &str) -> Option<(String, String, String)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    // `namespaces/NS/RESOURCE...` is a namespaced request; `namespaces[/NAME]` alone is the
    // namespaces resource itself.
    let rest = match rest {
        ["namespaces", _ns, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    let (resource, name, sub) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(*n), None),
        [r, n, s] => (*r, Some(*n), Some(*s)),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    let resource = match sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_owned(),
    };
    Some((group.to_owned(), resource, verb.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(m: &str, p: &str, q: &str) -> (String, String, String) {
        classify(m, p, q).expect("a resource request")
    }

    #[test]
    fn requests_map_to_the_grant_they_need() {
        let t = |g: &str, r: &str, v: &str| (g.to_owned(), r.to_owned(), v.to_owned());
        assert_eq!(c("GET", "/api/v1/pods", ""), t("", "pods", "list"));
        assert_eq!(
            c("GET", "/api/v1/pods", "&watch=true&resourceVersion=1"),
            t("", "pods", "watch")
        );
        assert_eq!(
            c("GET", "/api/v1/namespaces", ""),
            t("", "namespaces", "list")
        );
        assert_eq!(
            c("PATCH", "/api/v1/namespaces/shop/pods/web-1", ""),
            t("", "pods", "patch")
        );
        assert_eq!(
            c(
                "PATCH",
                "/apis/ycloud.io/v1alpha1/namespaces/shop/yusurservices/web/status",
                ""
            ),
            t("ycloud.io", "yusurservices/status", "patch")
        );
        assert_eq!(
            c(
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l",
                ""
            ),
            t("coordination.k8s.io", "leases", "update")
        );
        assert_eq!(
            c(
                "GET",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.kubevirt.io",
                ""
            ),
            t("apiextensions.k8s.io", "customresourcedefinitions", "get")
        );
        assert!(classify("GET", "/version", "").is_none());
    }
}
