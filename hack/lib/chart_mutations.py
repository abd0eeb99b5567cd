"""Proves chart_check.py can fail: each mutation breaks one promise in a good rendering (or
in api-calls.yaml) and names the message the checker must then print.

    python chart_mutations.py list
    python chart_mutations.py apply NAME RENDERED API_CALLS OUT_RENDERED OUT_API_CALLS

`list` prints "NAME<TAB>EXPECTED MESSAGE" lines; `apply` writes the mutated copies.
"""

import sys

import yaml


def find(docs, kind, component):
    for d in docs:
        labels = (d.get("metadata") or {}).get("labels") or {}
        if d["kind"] == kind and labels.get("app.kubernetes.io/component") == component:
            return d
    raise SystemExit(f"no {kind} of component {component} in the rendering")


def container(docs, kind, component, name):
    pod = find(docs, kind, component)["spec"]["template"]["spec"]
    for c in (pod.get("initContainers") or []) + pod["containers"]:
        if c["name"] == name:
            return c
    raise SystemExit(f"no container {name}")


def rule(role, resource):
    for r in role["rules"]:
        if resource in r["resources"]:
            return r
    raise SystemExit(f"no rule for {resource}")


def extra_verb(docs, calls):
    rule(find(docs, "ClusterRole", "controller"), "pods")["verbs"].append("delete")


def missing_rule(docs, calls):
    role = find(docs, "ClusterRole", "cni")
    role["rules"].remove(rule(role, "nodes"))


def wildcard(docs, calls):
    rule(find(docs, "ClusterRole", "cni"), "nodes")["verbs"] = ["*"]


def lease_cluster_wide(docs, calls):
    role = find(docs, "Role", "controller")
    find(docs, "ClusterRole", "controller")["rules"].extend(role["rules"])
    role["rules"] = []


def api_call_dropped(docs, calls):
    calls["controller"] = [e for e in calls["controller"] if e["resources"] != ["namespaces"]]


def api_call_added(docs, calls):
    calls["cni"].append({"group": "", "resources": ["services"], "verbs": ["list"]})


def controller_writable_root(docs, calls):
    container(docs, "Deployment", "controller", "controller")["securityContext"]["readOnlyRootFilesystem"] = False


def controller_as_root(docs, calls):
    find(docs, "Deployment", "controller")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False


def controller_wrong_sa(docs, calls):
    cni_sa = find(docs, "ServiceAccount", "cni")["metadata"]["name"]
    find(docs, "Deployment", "controller")["spec"]["template"]["spec"]["serviceAccountName"] = cni_sa


def controller_one_replica(docs, calls):
    find(docs, "Deployment", "controller")["spec"]["replicas"] = 1


def cni_extra_capability(docs, calls):
    container(docs, "DaemonSet", "cni", "cnid")["securityContext"]["capabilities"]["add"].append("SYS_PTRACE")


def cni_privileged(docs, calls):
    container(docs, "DaemonSet", "cni", "cnid")["securityContext"]["privileged"] = True


def cni_no_netns(docs, calls):
    pod = find(docs, "DaemonSet", "cni")["spec"]["template"]["spec"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "netns"]


def conflist_wrong_type(docs, calls):
    cm = find(docs, "ConfigMap", "cni")
    for k in cm["data"]:
        cm["data"][k] = cm["data"][k].replace('"ycloud-cni"', '"bridge"')


MUTATIONS = {
    "rbac-extra-verb": (extra_verb, "extra grant: delete pods.core (cluster)"),
    "rbac-missing-rule": (missing_rule, "missing grant: list nodes.core (cluster)"),
    "rbac-wildcard": (wildcard, "wildcard in verbs"),
    "rbac-lease-cluster-wide": (lease_cluster_wide, "extra grant: create leases.coordination.k8s.io (cluster)"),
    "api-calls-dropped": (api_call_dropped, "extra grant: list namespaces.core (cluster)"),
    "api-calls-added": (api_call_added, "missing grant: list services.core (cluster)"),
    "controller-writable-root": (controller_writable_root, "root filesystem must be read-only"),
    "controller-as-root": (controller_as_root, "must run as a non-root user"),
    "controller-wrong-serviceaccount": (controller_wrong_sa, "not its own component's"),
    "controller-one-replica": (controller_one_replica, "replicas 1, values say 2"),
    "cni-extra-capability": (cni_extra_capability, "capabilities must be drop ALL, add ['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN']"),
    "cni-privileged": (cni_privileged, "privileged"),
    "cni-without-netns": (cni_no_netns, "no hostPath volume for /var/run/netns"),
    "conflist-wrong-type": (conflist_wrong_type, "type ycloud-cni first"),
}


def main():
    if sys.argv[1:] == ["list"]:
        for name, (_, msg) in MUTATIONS.items():
            print(f"{name}\t{msg}")
        return 0
    _, cmd, name, rendered, api_calls, out_rendered, out_api_calls = sys.argv
    assert cmd == "apply", cmd
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    with open(api_calls) as f:
        calls = yaml.safe_load(f)
    MUTATIONS[name][0](docs, calls)
    with open(out_rendered, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
    with open(out_api_calls, "w") as f:
        yaml.safe_dump(calls, f, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
