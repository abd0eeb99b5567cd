//! Which services select a backend object: an index from label selectors to services, so
//! that a pod, VMI or VNicIP change re-resolves exactly the services that select it (issue
//! #6: "indexes from selectors to services so a pod change requeues exactly the services
//! that select it").
//!
//! A backend selector in the service's own namespace with at least one `matchLabels` pair
//! is indexed under one of its pairs (every pair must match, so any one is a necessary
//! condition); the rest (a `namespaceSelector`, only `matchExpressions`, `{}`) go to a
//! short list checked against every object. Candidates are then checked with the same
//! rules resolution uses, so the answer is exact, not a superset.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ycloud_crds::validate::selector_matches;
use ycloud_crds::{BackendType, YusurService};

use crate::store::Store;

/// The kinds of objects a service backend selector can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendObject {
    Pod,
    /// A KubeVirt VirtualMachineInstance.
    Vmi,
    /// A VNicIP; `bare_metal` when its kind is BareMetal (selected by `BM` too).
    VNicIp {
        bare_metal: bool,
    },
}

/// The index's kinds: `BM` and `VNicIP` selectors both select VNicIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Family {
    Pod,
    Vmi,
    VNic,
}

fn family(t: BackendType) -> Family {
    match t {
        BackendType::Pod => Family::Pod,
        BackendType::VM => Family::Vmi,
        BackendType::BM | BackendType::VNicIP => Family::VNic,
    }
}

fn family_of(o: BackendObject) -> Family {
    match o {
        BackendObject::Pod => Family::Pod,
        BackendObject::Vmi => Family::Vmi,
        BackendObject::VNicIp { .. } => Family::VNic,
    }
}

/// (kind, namespace, label key, label value).
type Key = (Family, String, String, String);

/// Services by the selectors of their backends.
#[derive(Debug, Default, Clone)]
pub struct ServiceIndex {
    by_label: HashMap<Key, BTreeSet<String>>,
    /// Services with a selector that can't be indexed by one label, per kind.
    scan: BTreeMap<Family, BTreeSet<String>>,
    /// Where each service is filed (to take it out again).
    filed: HashMap<String, Vec<Option<Key>>>,
}

impl ServiceIndex {
    /// The index of every service of `store`.
    pub fn build(store: &Store) -> Self {
        let mut ix = ServiceIndex::default();
        for (key, svc) in &store.services {
            ix.update(key, Some(svc));
        }
        ix
    }

    /// Files service `key` (`namespace/name`) as it is now; `None`: it is gone.
    pub fn update(&mut self, key: &str, svc: Option<&YusurService>) {
        for k in self.filed.remove(key).into_iter().flatten().flatten() {
            if let Some(set) = self.by_label.get_mut(&k) {
                set.remove(key);
                if set.is_empty() {
                    self.by_label.remove(&k);
                }
            }
        }
        for set in self.scan.values_mut() {
            set.remove(key);
        }
        let Some(svc) = svc else { return };
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let mut filed = Vec::new();
        for b in &svc.spec.backends {
            let f = family(b.kind);
            let pair = b
                .selector
                .match_labels
                .as_ref()
                .and_then(|m| m.iter().next());
            match (&b.namespace_selector, pair) {
                (None, Some((k, v))) => {
                    let k = (f, ns.clone(), k.clone(), v.clone());
                    self.by_label
                        .entry(k.clone())
                        .or_default()
                        .insert(key.to_owned());
                    filed.push(Some(k));
                }
                _ => {
                    self.scan.entry(f).or_default().insert(key.to_owned());
                    filed.push(None);
                }
            }
        }
        self.filed.insert(key.to_owned(), filed);
    }

    /// The services that select an object of kind `what` in `namespace` with `labels`
    /// (whatever its readiness: a pod that turns unready changes the services that select
    /// it). Namespace labels for `namespaceSelector`s come from `store`.
    pub fn selecting(
        &self,
        store: &Store,
        what: BackendObject,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> BTreeSet<String> {
        let f = family_of(what);
        let mut candidates: BTreeSet<&String> = self.scan.get(&f).into_iter().flatten().collect();
        for (k, v) in labels {
            let key = (f, namespace.to_owned(), k.clone(), v.clone());
            candidates.extend(self.by_label.get(&key).into_iter().flatten());
        }
        candidates
            .into_iter()
            .filter(|k| {
                store
                    .services
                    .get(*k)
                    .is_some_and(|svc| selects(store, svc, what, namespace, labels))
            })
            .cloned()
            .collect()
    }
}

/// Whether one of the service's backend selectors selects the object: the rule of
/// resolution's backend selection (kind, namespace or namespace selector, labels).
pub fn selects(
    store: &Store,
    svc: &YusurService,
    what: BackendObject,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let own_ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    let empty = BTreeMap::new();
    svc.spec.backends.iter().any(|b| {
        let kind_ok = match (b.kind, what) {
            (BackendType::Pod, BackendObject::Pod) | (BackendType::VM, BackendObject::Vmi) => true,
            (BackendType::VNicIP, BackendObject::VNicIp { .. }) => true,
            (BackendType::BM, BackendObject::VNicIp { bare_metal }) => bare_metal,
            _ => false,
        };
        let ns_ok = match &b.namespace_selector {
            None => namespace == own_ns,
            Some(sel) => store.namespaces.get(namespace).is_some_and(|n| {
                selector_matches(sel, n.metadata.labels.as_ref().unwrap_or(&empty))
            }),
        };
        kind_ok && ns_ok && selector_matches(&b.selector, labels)
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const SERVICES: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: web}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops}
---
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: web, namespace: shop}
spec: {scenarios: [ClusterIP], ports: [{name: p, port: 80}], backends: [{type: Pod, selector: {matchLabels: {app: web}}}]}
---
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: web-canary, namespace: shop}
spec: {scenarios: [ClusterIP], ports: [{name: p, port: 80}], backends: [{type: Pod, selector: {matchLabels: {app: web, track: canary}}}]}
---
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: all-in-shop, namespace: shop}
spec: {scenarios: [ClusterIP], ports: [{name: p, port: 80}], backends: [{type: Pod, selector: {}}]}
---
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: not-db, namespace: shop}
spec: {scenarios: [ClusterIP], ports: [{name: p, port: 80}], backends: [{type: Pod, selector: {matchExpressions: [{key: app, operator: NotIn, values: [db]}]}}]}
---
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: web-anywhere, namespace: ops}
spec: {scenarios: [ClusterIP], ports: [{name: p, port: 80}], backends: [{type: Pod, selector: {matchLabels: {app: web}}, namespaceSelector: {matchLabels: {team: web}}}]}
---
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: web-ops, namespace: ops}
spec: {scenarios: [ClusterIP], ports: [{name: p, port: 80}], backends: [{type: Pod, selector: {matchLabels: {app: web}}}]}
---
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: vms, namespace: shop}
spec: {scenarios: [ClusterIP], ports: [{name: p, port: 80}], backends: [{type: VM, selector: {matchLabels: {app: web}}}]}
---
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: metal, namespace: shop}
spec: {scenarios: [ClusterIP], ports: [{name: p, port: 80}], backends: [{type: BM, selector: {matchLabels: {app: web}}}]}
";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_backend_change_marks_exactly_the_services_that_select_it() {
        let mut store = Store::default();
        let errors = store.load_yaml(Path::new("t.yaml"), SERVICES);
        assert!(errors.is_empty(), "{errors:?}");
        let ix = ServiceIndex::build(&store);
        let vnic = BackendObject::VNicIp { bare_metal: false };
        let metal = BackendObject::VNicIp { bare_metal: true };
        // (kind, namespace, labels) → the services that select it.
        type Case<'a> = (
            BackendObject,
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a [&'a str],
        );
        let table: &[Case<'_>] = &[
            (
                BackendObject::Pod,
                "shop",
                &[("app", "web")],
                &[
                    "shop/all-in-shop",
                    "shop/not-db",
                    "shop/web",
                    "ops/web-anywhere",
                ],
            ),
            (
                BackendObject::Pod,
                "shop",
                &[("app", "web"), ("track", "canary")],
                &[
                    "shop/all-in-shop",
                    "shop/not-db",
                    "shop/web",
                    "shop/web-canary",
                    "ops/web-anywhere",
                ],
            ),
            (
                BackendObject::Pod,
                "shop",
                &[("app", "db")],
                &["shop/all-in-shop"],
            ),
            (
                BackendObject::Pod,
                "shop",
                &[],
                &["shop/all-in-shop", "shop/not-db"],
            ),
            // ops has no team label: only the service in ops itself.
            (
                BackendObject::Pod,
                "ops",
                &[("app", "web")],
                &["ops/web-ops"],
            ),
            (BackendObject::Pod, "elsewhere", &[("app", "web")], &[]),
            (BackendObject::Vmi, "shop", &[("app", "web")], &["shop/vms"]),
            (vnic, "shop", &[("app", "web")], &[]),
            (metal, "shop", &[("app", "web")], &["shop/metal"]),
        ];
        for (what, ns, l, want) in table {
            let got = ix.selecting(&store, *what, ns, &labels(l));
            let want: BTreeSet<String> = want.iter().map(|k| (*k).to_owned()).collect();
            assert_eq!(got, want, "{what:?} in {ns} with {l:?}");
            // The index agrees with checking every service.
            let brute: BTreeSet<String> = store
                .services
                .iter()
                .filter(|(_, s)| selects(&store, s, *what, ns, &labels(l)))
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(got, brute, "{what:?} in {ns} with {l:?}: index vs scan");
        }
    }

    #[test]
    fn a_service_edit_or_delete_refiles_it() {
        let mut store = Store::default();
        assert!(store.load_yaml(Path::new("t.yaml"), SERVICES).is_empty());
        let mut ix = ServiceIndex::build(&store);
        let web = labels(&[("app", "web")]);
        let mut svc = store.services["shop/web"].clone();
        svc.spec.backends[0].selector.match_labels = Some(labels(&[("app", "api")]));
        store.services.insert("shop/web".into(), svc.clone());
        ix.update("shop/web", Some(&svc));
        let got = ix.selecting(&store, BackendObject::Pod, "shop", &web);
        assert!(!got.contains("shop/web"), "{got:?}");
        let api = ix.selecting(
            &store,
            BackendObject::Pod,
            "shop",
            &labels(&[("app", "api")]),
        );
        assert!(api.contains("shop/web"), "{api:?}");
        store.services.remove("shop/web");
        ix.update("shop/web", None);
        let api = ix.selecting(
            &store,
            BackendObject::Pod,
            "shop",
            &labels(&[("app", "api")]),
        );
        assert!(!api.contains("shop/web"), "{api:?}");
        assert!(
            ix.by_label.keys().all(|(_, _, _, v)| v != "api"),
            "no empty entry left"
        );
    }
}
