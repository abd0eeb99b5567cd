//! The cache without an API server: watcher events in, lookups out.

use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;

use super::*;

fn pod(ns: &str, name: &str, rv: &str, ann: &[(&str, &str)]) -> PartialObjectMeta<Pod> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"namespace": ns, "name": name, "resourceVersion": rv,
            "annotations": ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
    }))
    .expect("partial object")
}

const NET: &str = r#"{"vpc":"v","subnet":"s","logicalSwitch":"ls","logicalSwitchPort":"ns.web","mac":"0a:00:00:00:00:0b","ips":["10.0.0.11/24"],"gateways":["10.0.0.1"],"mtu":1400}"#;

#[test]
fn lookups_say_try_again_until_the_first_list_is_complete_then_answer_from_it() {
    let c = Watched::new("pod");
    let src = PodSource { pods: c.clone() };
    let mut rx = src.changes().expect("a change signal");
    assert_eq!(
        src.lookup("ns", "web").expect_err("not synced").code,
        code::TRY_AGAIN_LATER
    );
    c.apply(Event::<PartialObjectMeta<Pod>>::Init);
    c.apply(Event::InitApply(pod(
        "ns",
        "web",
        "5",
        &[(NETWORK_ANNOTATION, NET)],
    )));
    // Half a list is not an answer yet.
    assert!(src.lookup("ns", "web").is_err());
    c.apply(Event::<PartialObjectMeta<Pod>>::InitDone);
    assert!(rx.has_changed().expect("open"));
    rx.mark_unchanged();
    let net = src.lookup("ns", "web").expect("ok").expect("annotated");
    assert_eq!(net.logical_switch_port, "ns.web");
    assert_eq!(src.lookup("ns", "other").expect("ok"), None);

    c.apply(Event::Delete(pod("ns", "web", "6", &[])));
    assert!(rx.has_changed().expect("open"));
    assert_eq!(src.lookup("ns", "web").expect("ok"), None);
}

#[test]
fn a_malformed_or_invalid_network_annotation_is_an_error_naming_the_pod_and_the_key() {
    let c = Watched::new("pod");
    c.apply(Event::<PartialObjectMeta<Pod>>::Init);
    c.apply(Event::InitApply(pod(
        "ns",
        "bad",
        "5",
        &[(NETWORK_ANNOTATION, "{not json")],
    )));
    c.apply(Event::InitApply(pod(
        "ns",
        "badmac",
        "5",
        &[(NETWORK_ANNOTATION, &NET.replace("0a:00:00:00:00:0b", "zz"))],
    )));
    c.apply(Event::<PartialObjectMeta<Pod>>::InitDone);
    let src = PodSource { pods: c };
    for name in ["bad", "badmac"] {
        let e = src.lookup("ns", name).expect_err("malformed");
        assert_eq!(e.code, code::ANNOTATION, "{e}");
        assert!(
            e.msg.contains(&format!("pod ns/{name}")) && e.msg.contains(NETWORK_ANNOTATION),
            "{e}"
        );
    }
}

#[test]
fn an_older_watch_event_does_not_overwrite_our_newer_patch_answer() {
    let c = Watched::new("pod");
    c.apply(Event::<PartialObjectMeta<Pod>>::Init);
    c.apply(Event::<PartialObjectMeta<Pod>>::InitDone);
    // Our patch's answer (rv 10) arrives before the watch event of an earlier change (rv 9).
    c.write_through(&pod("ns", "web", "10", &[(VF_ANNOTATION, "claim")]).metadata);
    c.apply(Event::Apply(pod("ns", "web", "9", &[])));
    assert_eq!(
        c.annotation("ns", "web", VF_ANNOTATION)
            .expect("synced")
            .as_deref(),
        Some("claim")
    );
    c.apply(Event::Apply(pod("ns", "web", "11", &[])));
    assert_eq!(
        c.annotation("ns", "web", VF_ANNOTATION).expect("synced"),
        None
    );
    // A relist replaces everything at once.
    c.apply(Event::<PartialObjectMeta<Pod>>::Init);
    c.apply(Event::InitApply(pod(
        "ns",
        "db",
        "12",
        &[(VF_ANNOTATION, "x")],
    )));
    c.apply(Event::<PartialObjectMeta<Pod>>::InitDone);
    assert_eq!(
        c.all(VF_ANNOTATION),
        vec![("ns".to_string(), "db".to_string(), "x".to_string())]
    );
}

#[test]
fn the_node_source_waits_for_the_first_list_and_reads_the_management_ports_document() {
    let c = Watched::new("node");
    let src = NodeAnnotationSource {
        node: "n1".into(),
        cache: c.clone(),
    };
    assert_eq!(
        src.node_network().expect("ok"),
        None,
        "unknown before the list"
    );
    c.apply(Event::<PartialObjectMeta<Node>>::Init);
    c.apply(Event::<PartialObjectMeta<Node>>::InitDone);
    assert_eq!(
        src.node_network().expect("ok"),
        Some(NodeNetwork::default()),
        "no node or no annotation: no management ports"
    );
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/annotations/node-management-ports.json"),
    )
    .expect("fixture");
    let node = |v: &str| -> PartialObjectMeta<Node> {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "resourceVersion": "3", "annotations": {MGMT_ANNOTATION: v}},
        }))
        .expect("node")
    };
    c.apply(Event::Apply(node(&doc)));
    let n = src.node_network().expect("ok").expect("known");
    assert_eq!(
        n.management_ports[0].logical_switch_port,
        "yc-node-n1-tenant-a"
    );
    c.apply(Event::Apply(node("[1,2]")));
    let e = src.node_network().expect_err("malformed");
    assert!(
        e.msg.contains("node n1") && e.msg.contains(MGMT_ANNOTATION),
        "{e}"
    );
}
