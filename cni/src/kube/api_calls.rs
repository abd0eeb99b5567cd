//! Every Kubernetes API call `ycloud-cnid` makes in cluster mode: the code-side copy of the
//! `cni:` section of `charts/ycloud/api-calls.yaml` (the source of the chart's RBAC).
//! `cni/tests/kube.rs` proves that this table equals that section and that every request
//! the daemon sends in its API scenarios is in it, so code, list and RBAC cannot drift.

/// One grant: `verbs` on `resources` of API group `group` ("" is the core API), cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCall {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

pub const API_CALLS: &[ApiCall] = &[
    // The pods of this node (watch with field selector spec.nodeName, metadata only), and
    // the dpu-host/dpu annotations ycloud.io/vf and ycloud.io/vf-status (merge patch).
    ApiCall {
        group: "",
        resources: &["pods"],
        verbs: &["list", "watch", "patch"],
    },
    // This node's ycloud.io/management-ports (watch with field selector metadata.name).
    ApiCall {
        group: "",
        resources: &["nodes"],
        verbs: &["list", "watch"],
    },
    // The NetworkProbes of this node (watch with label selector ycloud.io/node), and their
    // status by server-side apply (probes::cluster).
    ApiCall {
        group: "ycloud.io",
        resources: &["networkprobes"],
        verbs: &["list", "watch"],
    },
    ApiCall {
        group: "ycloud.io",
        resources: &["networkprobes/status"],
        verbs: &["patch"],
    },
];

/// Whether the table grants `verb` on `group`/`resource`.
pub fn allows(group: &str, resource: &str, verb: &str) -> bool {
    API_CALLS
        .iter()
        .any(|c| c.group == group && c.resources.contains(&resource) && c.verbs.contains(&verb))
}

/// The RBAC view of one request: `(group, resource[/subresource], verb)`, from its method,
/// path and query (`/api/v1/...` or `/apis/<group>/<version>/...`). `None` for paths that
/// are not resource requests (discovery).
pub fn classify(method: &str, path: &str, query: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, r @ ..] if !r.is_empty() => r,
        r => r,
    };
    let (resource, named) = match rest {
        [res] => (res.to_string(), false),
        [res, _name] => (res.to_string(), true),
        [res, _name, sub] => (format!("{res}/{sub}"), true),
        _ => return None,
    };
    let watching = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named) {
        ("GET", _) if watching => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => return None,
    };
    Some((group.to_string(), resource, verb.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_as_rbac_sees_them() {
        let c = |m, p, q| classify(m, p, q).map(|(g, r, v)| format!("{g}|{r}|{v}"));
        assert_eq!(
            c(
                "GET",
                "/api/v1/pods",
                "fieldSelector=spec.nodeName%3Dn1&limit=500"
            )
            .as_deref(),
            Some("|pods|list")
        );
        assert_eq!(
            c("GET", "/api/v1/pods", "watch=true&resourceVersion=1").as_deref(),
            Some("|pods|watch")
        );
        assert_eq!(
            c(
                "PATCH",
                "/api/v1/namespaces/ns/pods/web",
                "fieldManager=ycloud-cnid"
            )
            .as_deref(),
            Some("|pods|patch")
        );
        assert_eq!(
            c(
                "PATCH",
                "/apis/ycloud.io/v1alpha1/namespaces/ns/networkprobes/p/status",
                ""
            )
            .as_deref(),
            Some("ycloud.io|networkprobes/status|patch")
        );
        assert_eq!(
            c("GET", "/api/v1/nodes/n1", "").as_deref(),
            Some("|nodes|get")
        );
        assert_eq!(c("GET", "/version", ""), None);
        assert!(allows("", "pods", "watch"));
        assert!(!allows("", "pods", "get"));
        assert!(!allows("", "nodes", "patch"));
    }
}
