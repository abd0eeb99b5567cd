"""Checks one rendering of the ycloud Helm chart (`helm template --include-crds` output).

    python chart_check.py --rendered OUT.yaml --chart charts/ycloud --values ci/x-values.yaml
                          [--api-calls FILE] [--namespace NS] [--kube-version 1.33.0]

Runs in the kubernetes-validate venv (hack/helm-test.sh makes it). What it checks:

1. every Kubernetes object against the Kubernetes schemas of --kube-version, strictly
   (an unknown field is an error), with kubernetes-validate;
2. every ycloud.io object against the openAPIV3Schema of its CRD in the same rendering, as
   the API server prunes and validates it: unknown fields are errors. CEL rules
   (x-kubernetes-validations) are not evaluated here: only an API server can;
3. RBAC exactness: per component of api-calls.yaml, the rules of every Role/ClusterRole
   bound to that component's ServiceAccount, expanded to (scope, group, resource, verb),
   equal the file's list: a missing grant and an extra grant both fail, as do wildcards,
   resourceNames, unbound roles, and workloads running under another ServiceAccount;
4. the chart's promises for the workloads (non-root read-only controller without
   privileges, the CNI's exact capabilities and mounts, probes, resources, the conflist),
   against the values the rendering was made from (chart values.yaml + --values).

Prints one line per failure and exits 1 if there is any; prints a summary otherwise.
"""

import argparse
import copy
import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

CNI_CAPS = {"NET_ADMIN", "SYS_ADMIN", "NET_RAW"}


class Checker:
    def __init__(self, args):
        self.args = args
        self.errors = []
        self.counts = {}

    def fail(self, where, msg):
        self.errors.append(f"{where}: {msg}")

    def count(self, what):
        self.counts[what] = self.counts.get(what, 0) + 1


def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def name_of(doc):
    md = doc.get("metadata") or {}
    ns = md.get("namespace")
    return f"{doc.get('kind')}/{(ns + '/') if ns else ''}{md.get('name')}"


# ---------------------------------------------------------------- 1. Kubernetes schemas

def check_kubernetes_schemas(c, docs):
    for d in docs:
        if d["apiVersion"].split("/")[0] == "ycloud.io":
            continue
        try:
            kubernetes_validate.validate(d, c.args.kube_version, strict=True)
            c.count("Kubernetes objects valid against the schemas")
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            c.fail(name_of(d), f"Kubernetes {c.args.kube_version} schema: at {path or '(top)'}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            c.fail(name_of(d), f"no Kubernetes {c.args.kube_version} schema for {d['apiVersion']} {d['kind']}")


# ---------------------------------------------------------------- 2. custom resources

def structural(schema):
    """The CRD schema as the API server applies it, in JSON Schema terms: fields a schema
    does not declare are pruned by the server, so a manifest that has them is a mistake;
    `nullable` admits null."""
    s = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        for key in ("x-kubernetes-validations",):
            node.pop(key, None)
        if "properties" in node:
            for v in node["properties"].values():
                walk(v)
            if not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
                node["additionalProperties"] = False
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for v in node.get(key, []):
                walk(v)
        if "not" in node:
            walk(node["not"])

    walk(s)
    # metadata is the API server's business; only the shape is ours.
    props = s.setdefault("properties", {})
    props["metadata"] = {"type": "object"}
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    return s


def check_custom_resources(c, docs):
    crds = {}
    for d in docs:
        if d["kind"] == "CustomResourceDefinition":
            spec = d["spec"]
            crds[(spec["group"], spec["names"]["kind"])] = spec
    for d in docs:
        group, _, version = d["apiVersion"].rpartition("/")
        if group != "ycloud.io":
            continue
        where = name_of(d)
        spec = crds.get((group, d["kind"]))
        if spec is None:
            c.fail(where, f"no CRD for {d['apiVersion']} {d['kind']} in the rendering (the chart must ship it)")
            continue
        vers = [v for v in spec["versions"] if v["name"] == version and v.get("served")]
        if not vers:
            c.fail(where, f"the CRD does not serve version {version}")
            continue
        ns = (d.get("metadata") or {}).get("namespace")
        if spec["scope"] == "Cluster" and ns:
            c.fail(where, f"{d['kind']} is cluster-scoped but has metadata.namespace {ns!r}")
        schema = structural(vers[0]["schema"]["openAPIV3Schema"])
        validator = jsonschema.Draft7Validator(schema)
        errs = sorted(validator.iter_errors(d), key=lambda e: list(e.path))
        for e in errs:
            path = "/".join(str(p) for p in e.path)
            c.fail(where, f"CRD schema: at {path or '(top)'}: {e.message}")
        if not errs:
            c.count("custom resources valid against their CRDs")


# ---------------------------------------------------------------- 3. RBAC exactness

def expand_api_calls(api_calls):
    out = {}
    for component, entries in api_calls.items():
        grants = set()
        for i, e in enumerate(entries or []):
            unknown = set(e) - {"group", "resources", "verbs", "scope"}
            if unknown or not {"group", "resources", "verbs"} <= set(e):
                raise SystemExit(f"api-calls.yaml: {component}[{i}]: needs group, resources, verbs (and optional scope), got {sorted(e)}")
            scope = e.get("scope", "cluster")
            if scope not in ("cluster", "release-namespace"):
                raise SystemExit(f"api-calls.yaml: {component}[{i}]: scope must be cluster or release-namespace, got {scope!r}")
            for r in e["resources"]:
                for v in e["verbs"]:
                    grants.add((scope, e["group"], r, v))
        out[component] = grants
    return out


def check_rbac(c, docs, api_calls_file, namespace):
    with open(api_calls_file) as f:
        expected = expand_api_calls(yaml.safe_load(f))
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def component_of(d):
        return ((d.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")

    sas = {}
    for sa in by_kind.get("ServiceAccount", []):
        comp = component_of(sa)
        if comp not in expected:
            c.fail(name_of(sa), f"ServiceAccount of component {comp!r}, which api-calls.yaml does not list")
            continue
        sas[(sa["metadata"].get("namespace"), sa["metadata"]["name"])] = comp

    roles = {}
    for kind in ("ClusterRole", "Role"):
        for r in by_kind.get(kind, []):
            roles[(kind, r["metadata"].get("namespace"), r["metadata"]["name"])] = r
    granted = {comp: set() for comp in expected}
    bound = set()
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for b in by_kind.get(kind, []):
            ref = b["roleRef"]
            bns = b["metadata"].get("namespace")
            key = (ref["kind"], None if ref["kind"] == "ClusterRole" else bns, ref["name"])
            role = roles.get(key)
            if role is None:
                c.fail(name_of(b), f"binds {ref['kind']} {ref['name']}, which the chart does not create")
                continue
            bound.add(key)
            if kind == "ClusterRoleBinding":
                scope = "cluster"
            elif bns == namespace:
                scope = "release-namespace"
            else:
                c.fail(name_of(b), f"a RoleBinding outside the release namespace {namespace!r}")
                continue
            for s in b.get("subjects") or []:
                comp = sas.get((s.get("namespace"), s.get("name"))) if s.get("kind") == "ServiceAccount" else None
                if comp is None:
                    c.fail(name_of(b), f"subject {s} is not one of the chart's ServiceAccounts")
                    continue
                for i, rule in enumerate(role.get("rules") or []):
                    where = f"{name_of(role)} rule {i}"
                    if rule.get("resourceNames") or rule.get("nonResourceURLs"):
                        c.fail(where, "resourceNames/nonResourceURLs are not in api-calls.yaml's vocabulary")
                    for field in ("apiGroups", "resources", "verbs"):
                        if "*" in (rule.get(field) or []):
                            c.fail(where, f"wildcard in {field}")
                    for g in rule.get("apiGroups") or []:
                        for r in rule.get("resources") or []:
                            for v in rule.get("verbs") or []:
                                granted[comp].add((scope, g, r, v))
    for key, role in roles.items():
        if key not in bound:
            c.fail(name_of(role), "a role no binding uses")

    present = set(sas.values())
    for comp in sorted(expected):
        if comp not in present:
            if granted[comp]:
                c.fail(f"component {comp}", "grants without a ServiceAccount")
            continue
        for g in sorted(expected[comp] - granted[comp]):
            c.fail(f"RBAC of {comp}", f"missing grant: {fmt_grant(g)} (listed in api-calls.yaml)")
        for g in sorted(granted[comp] - expected[comp]):
            c.fail(f"RBAC of {comp}", f"extra grant: {fmt_grant(g)} (not in api-calls.yaml)")
        if expected[comp] == granted[comp]:
            c.count(f"components whose RBAC equals api-calls.yaml")

    # Every workload runs under its own component's ServiceAccount.
    for kind in ("Deployment", "DaemonSet", "StatefulSet"):
        for w in by_kind.get(kind, []):
            pod = w["spec"]["template"]["spec"]
            sa = (w["metadata"].get("namespace"), pod.get("serviceAccountName", "default"))
            comp = sas.get(sa)
            wcomp = component_of(w) or ""
            if comp is None or not (wcomp == comp or wcomp.startswith(comp + "-")):
                c.fail(name_of(w), f"runs as ServiceAccount {sa[1]!r} (component {comp}), not its own component's")
            if comp in expected and not expected[comp] and pod.get("automountServiceAccountToken") is not False:
                c.fail(name_of(w), "never calls the API but mounts a token")


def fmt_grant(g):
    scope, group, resource, verb = g
    return f"{verb} {resource}.{group or 'core'} ({scope})"


# ---------------------------------------------------------------- 4. workload promises

def containers(pod):
    return [("init", x) for x in pod.get("initContainers") or []] + [("", x) for x in pod.get("containers") or []]


def find(docs, kind, component):
    return [d for d in docs if d["kind"] == kind
            and ((d.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component") == component]


def check_workloads(c, docs, values):
    # Every container: an image with a tag, memory limit, requests.
    for d in docs:
        if d["kind"] not in ("Deployment", "DaemonSet", "StatefulSet"):
            continue
        pod = d["spec"]["template"]["spec"]
        for _, ct in containers(pod):
            where = f"{name_of(d)} container {ct['name']}"
            img = ct.get("image", "")
            if ":" not in img.rsplit("/", 1)[-1] or img.endswith(":"):
                c.fail(where, f"image {img!r} has no tag")
            res = ct.get("resources") or {}
            if not (res.get("requests") and (res.get("limits") or {}).get("memory")):
                c.fail(where, "needs resource requests and a memory limit")
            sc = ct.get("securityContext") or {}
            if sc.get("privileged") and not (d["kind"] == "DaemonSet" and ct["name"] == "ovs-ovn"):
                c.fail(where, "privileged (only the optional OVS pod may be)")

    # The controller.
    deps = find(docs, "Deployment", "controller")
    want_deps = 1 if values["controller"]["enabled"] else 0
    if len(deps) != want_deps:
        c.fail("controller", f"expected {want_deps} Deployment (controller.enabled: {values['controller']['enabled']}), found {len(deps)}")
    for d in deps:
        where = name_of(d)
        want = values["controller"]["replicas"]
        if d["spec"].get("replicas") != want:
            c.fail(where, f"replicas {d['spec'].get('replicas')}, values say {want}")
        pod = d["spec"]["template"]["spec"]
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
            c.fail(where, "pod must run as a non-root user (runAsNonRoot, runAsUser)")
        for _, ct in containers(pod):
            sc = ct.get("securityContext") or {}
            w = f"{where} container {ct['name']}"
            if sc.get("readOnlyRootFilesystem") is not True:
                c.fail(w, "root filesystem must be read-only")
            if sc.get("allowPrivilegeEscalation") is not False:
                c.fail(w, "allowPrivilegeEscalation must be false")
            caps = sc.get("capabilities") or {}
            if caps.get("drop") != ["ALL"] or caps.get("add"):
                c.fail(w, f"must drop ALL capabilities and add none, has {caps}")
            probes = {p: ((ct.get(p) or {}).get("httpGet") or {}).get("path") for p in ("livenessProbe", "readinessProbe")}
            if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
                c.fail(w, f"probes must be liveness /healthz and readiness /readyz, are {probes}")
            ports = {p["name"]: p["containerPort"] for p in ct.get("ports") or []}
            if ports.get("metrics") != values["controller"]["metrics"]["port"]:
                c.fail(w, f"metrics port {ports.get('metrics')}, values say {values['controller']['metrics']['port']}")
        cms = find(docs, "ConfigMap", "controller")
        env = cms[0]["data"] if cms else {}
        if env.get("YCLOUD_LEADER_ELECTION") != "true":
            c.fail(where, "leader election must be on (YCLOUD_LEADER_ELECTION)")
        if env.get("YCLOUD_SOURCE") != "kube":
            c.fail(where, "the controller must read the API server (YCLOUD_SOURCE=kube)")
        ovn = values["ovn"]
        if not ovn["deploy"] and env.get("YCLOUD_NB") != ovn["nbAddress"]:
            c.fail(where, f"YCLOUD_NB {env.get('YCLOUD_NB')!r}, values say {ovn['nbAddress']!r}")
        if ovn["deploy"] and env.get("YCLOUD_NB", "").count("tcp:") != len(ovn["central"]["nodeIPs"]):
            c.fail(where, f"YCLOUD_NB {env.get('YCLOUD_NB')!r} must list every OVN central member")
        tls = "ssl:" in env.get("YCLOUD_NB", "")
        vols = {v["name"]: v for v in pod.get("volumes") or []}
        mounts = {m["mountPath"]: m for _, ct in containers(pod) for m in ct.get("volumeMounts") or []}
        if tls:
            secret = (vols.get("ovn-tls") or {}).get("secret", {}).get("secretName")
            if secret != ovn["tls"]["secretName"]:
                c.fail(where, f"ssl: NB needs the TLS secret {ovn['tls']['secretName']!r} mounted, has {secret!r}")
            for k in ("YCLOUD_NB_CA", "YCLOUD_NB_CERT", "YCLOUD_NB_KEY"):
                if not any(env.get(k, "").startswith(p) for p in mounts):
                    c.fail(where, f"{k}={env.get(k)!r} is not under a mounted path")
        elif "ovn-tls" in vols or "YCLOUD_NB_CA" in env:
            c.fail(where, "TLS material mounted without an ssl: remote")
        for k, v in {"YCLOUD_LOG_LEVEL": values["logging"]["level"],
                     "YCLOUD_LOG_FORMAT": values["logging"]["format"],
                     "YCLOUD_OFFLOAD": str(values["offload"]["enabled"]).lower(),
                     "YCLOUD_RESYNC_SECS": str(values["controller"]["resyncSeconds"]),
                     "YCLOUD_UNDERLAY_MTU": str(values["network"]["underlayMtu"]),
                     "YCLOUD_SVCGW_CHASSIS": ",".join(values["network"]["serviceGatewayChassis"]),
                     "YCLOUD_SVCGW_POOL": values["network"]["serviceGatewayPool"],
                     "YCLOUD_EIP_TRANSIT_POOL": values["network"]["eipTransitPool"]}.items():
            # An empty list is left out rather than set to "" (absent = the default).
            if env.get(k, "" if k == "YCLOUD_SVCGW_CHASSIS" else None) != v:
                c.fail(where, f"{k}={env.get(k)!r}, values say {v!r}")
        c.count("controller Deployments checked")
    svcs = find(docs, "Service", "controller")
    if (values["controller"]["enabled"] and values["controller"]["metrics"]["service"]["enabled"]) != bool(svcs):
        c.fail("controller", f"metrics Service present={bool(svcs)}, values say {values['controller']['metrics']['service']['enabled']}")

    # The CNI DaemonSet.
    dss = find(docs, "DaemonSet", "cni")
    if len(dss) != 1:
        c.fail("cni", f"expected one DaemonSet, found {len(dss)}")
    cv = values["cni"]
    for d in dss:
        where = name_of(d)
        pod = d["spec"]["template"]["spec"]
        if pod.get("hostNetwork") is not True:
            c.fail(where, "must use the host network")
        if not pod.get("priorityClassName"):
            c.fail(where, "needs a priorityClassName")
        if cv["tolerations"] != pod.get("tolerations"):
            c.fail(where, f"tolerations {pod.get('tolerations')}, values say {cv['tolerations']}")
        host = {v["name"]: v["hostPath"]["path"] for v in pod.get("volumes") or [] if "hostPath" in v}
        for p in (cv["binDir"], cv["confDir"], "/var/run/netns", "/var/run/openvswitch", "/sys", "/run/ycloud"):
            if p not in host.values():
                c.fail(where, f"no hostPath volume for {p}")
        inits = [ct for kind, ct in containers(pod) if kind == "init"]
        install = [ct for ct in inits if ct["name"] == "install-cni"]
        if not install:
            c.fail(where, "no install-cni init container")
        for ct in install:
            vm = {m["name"] for m in ct.get("volumeMounts") or []}
            for v in ("cni-bin", "cni-conf", "cni-conflist"):
                if v not in vm:
                    c.fail(where, f"install-cni does not mount {v}")
            script = " ".join(ct.get("command") or [])
            if cv["confFile"] not in script or "ycloud-cni" not in script:
                c.fail(where, "install-cni does not install the plugin and the conflist")
        for kind, ct in containers(pod):
            sc = ct.get("securityContext") or {}
            w = f"{where} container {ct['name']}"
            caps = sc.get("capabilities") or {}
            want = set() if kind == "init" else CNI_CAPS
            if caps.get("drop") != ["ALL"] or set(caps.get("add") or []) != want:
                c.fail(w, f"capabilities must be drop ALL, add {sorted(want)}; are {caps}")
            if sc.get("privileged") or sc.get("allowPrivilegeEscalation") is not False:
                c.fail(w, "must not be privileged nor escalate")
            if sc.get("readOnlyRootFilesystem") is not True:
                c.fail(w, "root filesystem must be read-only")
        daemon = [ct for ct in pod["containers"] if ct["name"] == "cnid"]
        args = daemon[0].get("args", []) if daemon else []
        for a in (f"--mode={cv['mode']}", f"--ovs-db={cv['ovsDb']}", f"--bridge={cv['bridge']}",
                  "--node-name=$(YCLOUD_NODE_NAME)",
                  f"--ovn-installed-timeout-ms={cv['ovnInstalledTimeoutSeconds'] * 1000}"):
            if a not in args:
                c.fail(where, f"cnid args lack {a}: {args}")
        hw = values["offload"]["hwOffload"]
        tc = [a for a in args if a.startswith("--tc-policy=")]
        if tc != ([f"--tc-policy={values['offload']['tcPolicy']}"] if hw else []):
            c.fail(where, f"--tc-policy args {tc} do not match offload.hwOffload {hw}, tcPolicy {values['offload']['tcPolicy']}")
        mounts = {m["mountPath"]: m for m in (daemon[0].get("volumeMounts") if daemon else []) or []}
        if (mounts.get("/var/run/netns") or {}).get("mountPropagation") != "HostToContainer":
            c.fail(where, "/var/run/netns must be mounted with HostToContainer propagation")
        if not (mounts.get("/host/sys") or {}).get("readOnly"):
            c.fail(where, "sysfs must be mounted read-only")
        c.count("CNI DaemonSets checked")

    # The conflist the init container installs.
    for cm in find(docs, "ConfigMap", "cni"):
        raw = (cm.get("data") or {}).get(cv["confFile"])
        if raw is None:
            c.fail(name_of(cm), f"no {cv['confFile']}")
            continue
        try:
            conf = json.loads(raw)
        except ValueError as e:
            c.fail(name_of(cm), f"{cv['confFile']} is not JSON: {e}")
            continue
        plugins = conf.get("plugins") or [{}]
        if conf.get("cniVersion") not in ("1.0.0", "1.1.0") or not conf.get("name") or plugins[0].get("type") != "ycloud-cni":
            c.fail(name_of(cm), f"conflist must have cniVersion 1.0.0/1.1.0, a name and type ycloud-cni first: {conf}")
        if not str(plugins[0].get("daemonSocket", "")).startswith("/run/ycloud/"):
            c.fail(name_of(cm), "daemonSocket must be in /run/ycloud, the directory cnid shares with the host")
        c.count("conflists checked")

    # Optional OVN.
    ovn_parts = find(docs, "StatefulSet", "ovn-central") + find(docs, "DaemonSet", "ovn-node")
    if values["ovn"]["deploy"]:
        if len(ovn_parts) != 2:
            c.fail("ovn", f"ovn.deploy: expected the central StatefulSet and the node DaemonSet, found {len(ovn_parts)}")
        for s in find(docs, "StatefulSet", "ovn-central"):
            if s["spec"]["replicas"] != len(values["ovn"]["central"]["nodeIPs"]):
                c.fail(name_of(s), "replicas must equal the number of ovn.central.nodeIPs")
    elif ovn_parts:
        c.fail("ovn", "OVN workloads rendered with ovn.deploy: false")

    eips = [d for d in docs if d["kind"] == "EipGateway"]
    if len(eips) != len(values.get("eipGateways") or []):
        c.fail("eipGateways", f"{len(eips)} EipGateway objects rendered, values list {len(values.get('eipGateways') or [])}")


def check_default_vpc(c, docs, values):
    """The chart's default VPC is an ordinary Vpc object carrying the network values."""
    net = values["network"]
    vpcs = [d for d in docs if d["kind"] == "Vpc" and d["apiVersion"].startswith("ycloud.io/")]
    want = net.get("defaultVpc") or ""
    if not want:
        if vpcs:
            c.fail("Vpc", "network.defaultVpc is empty but a Vpc is rendered")
        return
    named = [d for d in vpcs if d["metadata"]["name"] == want]
    if len(named) != 1:
        c.fail("Vpc", f"expected one Vpc {want!r} (network.defaultVpc), found {len(named)}")
        return
    spec = named[0].get("spec") or {}
    if spec.get("default") is not True:
        c.fail(f"Vpc/{want}", "spec.default must be true")
    if spec.get("serviceCIDRs") != [net["serviceCIDR"]]:
        c.fail(f"Vpc/{want}", f"spec.serviceCIDRs={spec.get('serviceCIDRs')!r}, values say [{net['serviceCIDR']!r}]")
    if spec.get("joinCIDR") != net["joinCIDR"]:
        c.fail(f"Vpc/{want}", f"spec.joinCIDR={spec.get('joinCIDR')!r}, values say {net['joinCIDR']!r}")
    if (named[0]["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") != "keep":
        c.fail(f"Vpc/{want}", "must be kept on uninstall (helm.sh/resource-policy: keep)")
    c.count("default VPC checked")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rendered", required=True)
    p.add_argument("--chart", required=True)
    p.add_argument("--values", action="append", default=[])
    p.add_argument("--api-calls")
    p.add_argument("--namespace", default="default")
    p.add_argument("--kube-version", default="1.33.0")
    args = p.parse_args()
    c = Checker(args)

    with open(args.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for d in docs:
        if not (isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and (d.get("metadata") or {}).get("name")):
            print(f"{args.rendered}: a document without apiVersion, kind or metadata.name: {str(d)[:200]}")
            return 1
    with open(os.path.join(args.chart, "values.yaml")) as f:
        values = yaml.safe_load(f)
    for v in args.values:
        with open(v) as f:
            values = deep_merge(values, yaml.safe_load(f))

    check_kubernetes_schemas(c, docs)
    check_custom_resources(c, docs)
    check_rbac(c, docs, args.api_calls or os.path.join(args.chart, "api-calls.yaml"), args.namespace)
    check_workloads(c, docs, values)
    check_default_vpc(c, docs, values)

    if c.errors:
        for e in c.errors:
            print(f"FAIL {e}")
        return 1
    print(f"ok: {len(docs)} objects; " + "; ".join(f"{n} {k}" for k, n in sorted(c.counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
