//! The controller demotes a failed gateway chassis, against real OVN_Northbound and
//! OVN_Southbound ovsdb-servers and the controller binary with `--ovn-sb`. No northd
//! runs: the test writes the SB rows OVN would (a `Chassis` per node, the gateway's
//! `chassisredirect` `Port_Binding` and its `chassis`), which is OVN's election as
//! ovn-controller records it, and reads the `Gateway_Chassis` priorities the controller
//! programs: for every port of an EIP gateway (its external port and the VPC uplink), and
//! for the service gateway's beacon.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use ycloud_controller::sbwatch::SETTLE;
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

#[path = "support/manifest.rs"]
#[allow(dead_code)]
mod manifest;
use manifest::Controller;
#[path = "support/ovn_dbs.rs"]
mod ovn_dbs;
use ovn_dbs::{add_chassis, add_cr_binding, nbctl, wait_until};

const CR_PORT: &str = "cr-yc-eipgw-public-ext";
const SPEC: [(&str, u16); 3] = [("node-1", 20), ("node-2", 10), ("node-3", 5)];

/// The EIP gateway's external `cr-` port binding as northd makes it; its uuid.
fn add_binding(sb: &OvsdbServer) -> String {
    add_cr_binding(sb, CR_PORT)
}

/// The examples an EIP service needs, and the gateway with three chassis; `failback`:
/// the value of its `ycloud.io/failback` annotation.
fn write_manifests(to: &Path, failback: Option<&str>) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for f in [
        "00-namespaces.yaml",
        "01-vpcs.yaml",
        "02-subnets.yaml",
        "12-eip.yaml",
    ] {
        std::fs::copy(examples.join(f), to.join(f)).expect("copy example");
    }
    let annotations = failback
        .map(|v| format!("  annotations: {{ycloud.io/failback: \"{v}\"}}\n"))
        .unwrap_or_default();
    let chassis: String = SPEC
        .iter()
        .map(|(c, p)| format!("  - {{name: {c}, priority: {p}}}\n"))
        .collect();
    // Written aside and renamed: the controller never reads half a file.
    let tmp = to.join(".gw.tmp");
    std::fs::write(
        &tmp,
        format!(
            "apiVersion: ycloud.io/v1alpha1\nkind: EipGateway\nmetadata:\n  name: public\n\
             {annotations}spec:\n  externalNetwork:\n    cidr: 200.0.0.0/24\n    \
             gateway: 200.0.0.1\n    address: 200.0.0.2\n    localnet: physnet1\n  \
             pool: [200.0.0.100..200.0.0.199]\n  gatewayChassis:\n{chassis}"
        ),
    )
    .expect("write gateway");
    std::fs::rename(&tmp, to.join("03-eip-gateway.yaml")).expect("rename gateway");
}

/// Chassis → the priorities it has on the gateway's ports (one value when every port
/// agrees), and how many ports of the gateway have gateway chassis.
fn priorities(nb: &OvsdbServer) -> (BTreeMap<String, BTreeSet<u16>>, usize) {
    priorities_of(nb, "eipgw-public")
}

/// [`priorities`] of the ports whose `Gateway_Chassis` names contain `ports`.
fn priorities_of(nb: &OvsdbServer, filter: &str) -> (BTreeMap<String, BTreeSet<u16>>, usize) {
    let rows = nbctl(
        nb,
        &[
            "--bare",
            "--columns=name,chassis_name,priority",
            "list",
            "Gateway_Chassis",
        ],
    );
    let words: Vec<&str> = rows.split_whitespace().collect();
    let mut by_chassis: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    let mut ports = BTreeSet::new();
    for c in words.chunks(3) {
        if !c[0].contains(filter) {
            continue;
        }
        let port = c[0].strip_suffix(&format!("-{}", c[1])).expect("gwc name");
        ports.insert(port.to_owned());
        by_chassis
            .entry(c[1].to_owned())
            .or_default()
            .insert(c[2].parse().expect("priority"));
    }
    (by_chassis, ports.len())
}

/// The priorities as `chassis:priority` when every port agrees; panics if they do not.
fn programmed(nb: &OvsdbServer) -> Vec<String> {
    programmed_of(nb, "eipgw-public")
}

/// [`programmed`] of the ports whose `Gateway_Chassis` names contain `ports`.
fn programmed_of(nb: &OvsdbServer, ports: &str) -> Vec<String> {
    let (by_chassis, _) = priorities_of(nb, ports);
    by_chassis
        .iter()
        .map(|(c, p)| {
            assert_eq!(p.len(), 1, "the gateway's ports disagree on {c}: {p:?}");
            format!("{c}:{}", p.first().expect("one"))
        })
        .collect()
}

fn spec_priorities() -> Vec<String> {
    SPEC.iter().map(|(c, p)| format!("{c}:{p}")).collect()
}

/// The EIP gateway router's demotion record (`ycloud.io/demoted`), empty without one.
fn recorded(nb: &OvsdbServer) -> String {
    recorded_on(nb, "yc-eipgw-public")
}

/// Router `router`'s demotion record, empty without one.
fn recorded_on(nb: &OvsdbServer, router: &str) -> String {
    let ids = nbctl(
        nb,
        &[
            "--bare",
            "--columns=external_ids",
            "find",
            "Logical_Router",
            &format!("name={router}"),
        ],
    );
    ids.split_whitespace()
        .find_map(|kv| kv.strip_prefix("\"ycloud.io/demoted\"="))
        .or_else(|| {
            ids.split_whitespace()
                .find_map(|kv| kv.strip_prefix("ycloud.io/demoted="))
        })
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default()
}

/// The gateway's status document (manifest mode's status file).
fn status(dir: &Path) -> serde_yaml::Value {
    let path = dir.join(".status/EipGateway/public.yaml");
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_yaml::from_str(&t).ok())
        .unwrap_or(serde_yaml::Value::Null)
}

fn demoted_in_status(dir: &Path) -> Vec<String> {
    status(dir)["status"]["demotedChassis"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn active_in_status(dir: &Path) -> Option<String> {
    status(dir)["status"]["activeChassis"]
        .as_str()
        .map(str::to_owned)
}

/// For `d`, the priorities stay `want` (checked every 50 ms).
fn stays(nb: &OvsdbServer, d: Duration, want: &[String], why: &str) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        assert_eq!(programmed(nb), want, "{why}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(dir: &Path, nb: &OvsdbServer, sb: &OvsdbServer) -> Controller {
    Controller::start(
        dir,
        &nb.unix_remote(),
        &[&format!("--ovn-sb={}", sb.unix_remote())],
    )
}

#[test]
fn a_failed_gateway_chassis_is_demoted_once_the_standby_has_held_the_gateway_and_stays_demoted_until_the_operator_fails_back()
 {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    nbctl(&nb, &["init"]);
    let sb = OvsdbServer::start(SchemaFile::Sb).expect("SB");
    let n1 = add_chassis(&sb, "node-1", "192.0.2.1");
    let n2 = add_chassis(&sb, "node-2", "192.0.2.2");
    let n3 = add_chassis(&sb, "node-3", "192.0.2.3");
    let dir = tempfile::tempdir().expect("tmp");
    write_manifests(dir.path(), None);
    let ctl = start(dir.path(), &nb, &sb);

    // The spec's priorities on both ports of the gateway (external port, VPC uplink).
    wait_until("the gateway's priorities", Duration::from_secs(30), || {
        priorities(&nb).1 >= 2 && programmed(&nb) == spec_priorities()
    });
    let pb = add_binding(&sb);

    // A start-up flip: a standby holds the port for a moment, then the top chassis. Not a
    // failure: nothing is demoted.
    claim(&sb, &pb, &n2);
    std::thread::sleep(Duration::from_secs(1));
    claim(&sb, &pb, &n1);
    stays(
        &nb,
        SETTLE + Duration::from_secs(1),
        &spec_priorities(),
        "a start-up flip demoted a chassis",
    );
    assert_eq!(recorded(&nb), "");

    // node-1 fails, node-2 takes over: demoted once node-2 has held it for SETTLE, not before.
    let failed = Instant::now();
    claim(&sb, &pb, &n2);
    stays(
        &nb,
        SETTLE - Duration::from_millis(500),
        &spec_priorities(),
        "demoted before the holder settled",
    );
    let demoted = ["node-1:4", "node-2:10", "node-3:5"].map(str::to_owned);
    wait_until("node-1 demoted", Duration::from_secs(10), || {
        programmed(&nb) == demoted
    });
    eprintln!(
        "FIGURE demotion: SB claim by the standby -> NB priorities demoted in {} ms (settle {} ms)",
        failed.elapsed().as_millis(),
        SETTLE.as_millis()
    );
    assert_eq!(recorded(&nb), "node-1");
    wait_until("the status says so", Duration::from_secs(10), || {
        demoted_in_status(dir.path()) == ["node-1"]
            && active_in_status(dir.path()).as_deref() == Some("node-2")
    });

    // A restarted controller keeps the demotion: it never repairs the priorities to spec.
    drop(ctl);
    let ctl = start(dir.path(), &nb, &sb);
    stays(
        &nb,
        SETTLE + Duration::from_secs(2),
        &demoted,
        "a restarted controller repaired the demotion (the failback it avoids)",
    );
    assert_eq!(recorded(&nb), "node-1");

    // node-2 fails too: node-3 takes over, node-2 goes below it (node-1 stays demoted).
    claim(&sb, &pb, &n3);
    let both = ["node-1:4", "node-2:3", "node-3:5"].map(str::to_owned);
    wait_until("node-2 demoted too", Duration::from_secs(10), || {
        programmed(&nb) == both
    });
    assert_eq!(recorded(&nb), "node-1,node-2");
    wait_until("the status says so", Duration::from_secs(10), || {
        demoted_in_status(dir.path()) == ["node-1", "node-2"]
            && active_in_status(dir.path()).as_deref() == Some("node-3")
    });

    // The operator fails back (a new annotation value) while node-1 is still dead: the
    // spec's priorities at once; OVN cannot move the port, so once the new priorities have
    // settled the dead chassis are demoted again.
    write_manifests(dir.path(), Some("1"));
    wait_until("the spec's priorities", Duration::from_secs(10), || {
        programmed(&nb) == spec_priorities()
    });
    assert_eq!(recorded(&nb), "");
    wait_until("demoted again", Duration::from_secs(10), || {
        programmed(&nb) == both
    });

    // The operator fails back again, and this time node-1 is alive: OVN moves the port to
    // it within the settle time, and nothing is demoted.
    write_manifests(dir.path(), Some("2"));
    wait_until("the spec's priorities", Duration::from_secs(10), || {
        programmed(&nb) == spec_priorities()
    });
    claim(&sb, &pb, &n1);
    stays(
        &nb,
        SETTLE + Duration::from_secs(1),
        &spec_priorities(),
        "a failback that OVN followed was undone",
    );
    assert_eq!(recorded(&nb), "");
    wait_until(
        "the status has no demotion",
        Duration::from_secs(10),
        || {
            demoted_in_status(dir.path()).is_empty()
                && active_in_status(dir.path()).as_deref() == Some("node-1")
        },
    );
    drop(ctl);
}

/// `yc-svcgw`'s `options:chassis`, or `None` while the router is not there.
fn pinned(nb: &OvsdbServer) -> Option<String> {
    let out = nbctl(
        nb,
        &[
            "--bare",
            "--columns=options",
            "find",
            "Logical_Router",
            "name=yc-svcgw",
        ],
    );
    out.split_whitespace()
        .find_map(|kv| kv.strip_prefix("chassis="))
        .map(|c| c.trim_matches('"').to_owned())
}

fn start_svcgw(dir: &Path, nb: &OvsdbServer, sb: &OvsdbServer, chassis: &str) -> Controller {
    Controller::start(
        dir,
        &nb.unix_remote(),
        &[
            &format!("--svcgw-chassis={chassis}"),
            &format!("--ovn-sb={}", sb.unix_remote()),
        ],
    )
}

#[test]
fn the_service_gateway_beacon_s_failed_chassis_is_demoted_kept_across_a_restart_and_restored_by_new_priorities()
 {
    const BEACON: &str = "yc-svcgw-beacon-gw-";
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    nbctl(&nb, &["init"]);
    let sb = OvsdbServer::start(SchemaFile::Sb).expect("SB");
    let n1 = add_chassis(&sb, "node-1", "192.0.2.1");
    let n2 = add_chassis(&sb, "node-2", "192.0.2.2");
    let dir = tempfile::tempdir().expect("tmp");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for f in [
        "00-namespaces.yaml",
        "01-vpcs.yaml",
        "02-subnets.yaml",
        "03-eip-gateway.yaml",
        "13-cross-vpc.yaml",
    ] {
        std::fs::copy(examples.join(f), dir.path().join(f)).expect("copy example");
    }
    let spec = "node-1:20,node-2:10,node-3:5";
    let ctl = start_svcgw(dir.path(), &nb, &sb, spec);
    let configured = ["node-1:20", "node-2:10", "node-3:5"].map(str::to_owned);
    wait_until("the beacon's priorities", Duration::from_secs(30), || {
        programmed_of(&nb, BEACON) == configured
    });
    let pb = add_cr_binding(&sb, "cr-yc-svcgw-beacon-gw");
    claim(&sb, &pb, &n1);
    stays_of(&nb, BEACON, SETTLE + Duration::from_secs(1), &configured);

    // node-1 fails: yc-svcgw follows the beacon to node-2 at once, and once node-2 has
    // held it for SETTLE node-1 is demoted below it on the beacon.
    claim(&sb, &pb, &n2);
    wait_until("yc-svcgw on node-2", Duration::from_secs(10), || {
        pinned(&nb).as_deref() == Some("node-2")
    });
    let demoted = ["node-1:4", "node-2:10", "node-3:5"].map(str::to_owned);
    wait_until(
        "node-1 demoted on the beacon",
        Duration::from_secs(10),
        || programmed_of(&nb, BEACON) == demoted,
    );
    assert_eq!(recorded_on(&nb, "yc-svcgw-beacon"), "node-1");

    // A restarted controller keeps it (and the pin).
    drop(ctl);
    let ctl = start_svcgw(dir.path(), &nb, &sb, spec);
    stays_of(&nb, BEACON, SETTLE + Duration::from_secs(1), &demoted);
    assert_eq!(pinned(&nb).as_deref(), Some("node-2"));

    // The operator's failback: new priorities (here node-1 raised by one), the beacon gets
    // them at once, OVN moves the beacon back to node-1 and the gateway follows; nothing is
    // demoted again.
    drop(ctl);
    let _ctl = start_svcgw(dir.path(), &nb, &sb, "node-1:21,node-2:10,node-3:5");
    let raised = ["node-1:21", "node-2:10", "node-3:5"].map(str::to_owned);
    wait_until("the new priorities", Duration::from_secs(10), || {
        programmed_of(&nb, BEACON) == raised
    });
    assert_eq!(recorded_on(&nb, "yc-svcgw-beacon"), "");
    claim(&sb, &pb, &n1);
    wait_until("yc-svcgw on node-1", Duration::from_secs(10), || {
        pinned(&nb).as_deref() == Some("node-1")
    });
    stays_of(&nb, BEACON, SETTLE + Duration::from_secs(1), &raised);
}

/// For `d`, the priorities of the ports matching `ports` stay `want`.
fn stays_of(nb: &OvsdbServer, ports: &str, d: Duration, want: &[String]) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        assert_eq!(programmed_of(nb, ports), want, "the priorities moved");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn without_ovn_sb_a_recorded_demotion_is_not_applied_and_the_spec_priorities_return() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    nbctl(&nb, &["init"]);
    let sb = OvsdbServer::start(SchemaFile::Sb).expect("SB");
    add_chassis(&sb, "node-1", "192.0.2.1");
    let n2 = add_chassis(&sb, "node-2", "192.0.2.2");
    let dir = tempfile::tempdir().expect("tmp");
    write_manifests(dir.path(), None);
    let pb = add_binding(&sb);
    // node-2 holds the gateway from the start (node-1 dead all along): demoted once held.
    claim(&sb, &pb, &n2);
    let ctl = start(dir.path(), &nb, &sb);
    wait_until("node-1 demoted", Duration::from_secs(30), || {
        recorded(&nb) == "node-1"
    });
    assert_eq!(programmed(&nb), ["node-1:4", "node-2:10", "node-3:5"]);
    drop(ctl);
    // Without --ovn-sb the controller does not know who holds the gateway: it programs the
    // spec (a returning node-1 then takes the gateway back: the failback preempts).
    let _ctl = Controller::start(dir.path(), &nb.unix_remote(), &[]);
    wait_until("the spec's priorities", Duration::from_secs(30), || {
        programmed(&nb) == spec_priorities()
    });
    assert_eq!(recorded(&nb), "");
}

/// What ovn-controller writes when its chassis claims the port (a failover: the old
/// holder's claim is gone in the same moment).
fn claim(sb: &OvsdbServer, pb: &str, chassis: &str) {
    ovn_dbs::claim(sb, pb, Some(chassis));
}
