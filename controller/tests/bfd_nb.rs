//! BFD timers as controller configuration, against a real OVN_Northbound ovsdb-server: the
//! planner writes only the configured `NB_Global options:bfd-*` keys, in one mutate, and
//! nothing when they already match; an operator's other options survive; drift is repaired;
//! and the controller binary given `--bfd-*` flags puts them in NB (and leaves them alone
//! when started without).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ycloud_controller::compiler::gateways::{BfdTimers, plan_bfd};
use ycloud_controller::compiler::nb;
use ycloud_controller::compiler::plan::Plan;
use ycloud_ovsdb::cache::Cache;
use ycloud_ovsdb::ops::Operation;
use ycloud_ovsdb::{Client, ClientConfig};
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

#[path = "support/manifest.rs"]
#[allow(dead_code)]
mod manifest;
use manifest::Controller;
#[path = "support/ovn_dbs.rs"]
mod ovn_dbs;
use ovn_dbs::nbctl;

/// `NB_Global options` as ovn-nbctl prints them, e.g. `{bfd-mult="3", foo=bar}`.
fn options(nb: &OvsdbServer) -> String {
    nbctl(nb, &["get", "NB_Global", ".", "options"])
}

async fn connect(nb: &OvsdbServer) -> (Client, Cache) {
    let (client, _events) =
        Client::connect(ClientConfig::new(vec![nb.unix_remote()], "OVN_Northbound"))
            .await
            .expect("connect");
    let schema = Arc::new(client.get_schema("OVN_Northbound").await.expect("schema"));
    let cache = nb::cache(schema).expect("cache");
    client.monitor_cache(&cache).await.expect("monitor");
    (client, cache)
}

/// Lets the monitor deliver what ovn-nbctl wrote.
async fn settle(client: &Client) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.echo(serde_json::json!([])).await.expect("echo");
}

/// One planner pass: the ops it sent.
async fn reconcile(client: &Client, cache: &Cache, bfd: &BfdTimers) -> Vec<Operation> {
    let mut plan = Plan::new("b");
    plan_bfd(&cache.snapshot(), bfd, &mut plan);
    if !plan.is_empty() {
        client.transact(&plan.ops).await.expect("bfd txn");
    }
    settle(client).await;
    plan.ops
}

#[tokio::test]
async fn bfd_timers_reach_nb_global_without_touching_an_operators_options_and_drift_is_repaired() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    nbctl(&nb, &["init"]);
    nbctl(
        &nb,
        &[
            "set",
            "NB_Global",
            ".",
            "options:northd_probe_interval=5000",
            "options:bfd-decay-min-rx=2000",
        ],
    );
    let (client, cache) = connect(&nb).await;
    settle(&client).await;
    let fast = BfdTimers {
        min_rx_ms: Some(100),
        min_tx_ms: Some(100),
        mult: Some(3),
    };

    let ops = reconcile(&client, &cache, &fast).await;
    assert_eq!(ops.len(), 1, "one mutate: {ops:?}");
    assert_eq!(
        options(&nb),
        "{bfd-decay-min-rx=\"2000\", bfd-min-rx=\"100\", bfd-min-tx=\"100\", bfd-mult=\"3\", \
         northd_probe_interval=\"5000\"}"
    );
    assert!(
        reconcile(&client, &cache, &fast).await.is_empty(),
        "no change, no write"
    );

    // By hand: one timer changed. Only it is put back.
    nbctl(&nb, &["set", "NB_Global", ".", "options:bfd-min-tx=1000"]);
    settle(&client).await;
    let ops = reconcile(&client, &cache, &fast).await;
    assert_eq!(ops.len(), 1, "{ops:?}");
    let json = serde_json::to_string(&ops[0].to_json()).expect("json");
    assert!(
        json.contains("bfd-min-tx") && !json.contains("bfd-min-rx") && !json.contains("bfd-mult"),
        "only the drifted key is written: {json}"
    );
    assert_eq!(
        nbctl(&nb, &["get", "NB_Global", ".", "options:bfd-min-tx"]),
        "\"100\""
    );

    // Unconfigured timers are not ours: a controller with only --bfd-mult leaves the
    // other two as they are.
    let only_mult = BfdTimers {
        mult: Some(5),
        ..BfdTimers::default()
    };
    reconcile(&client, &cache, &only_mult).await;
    assert_eq!(
        options(&nb),
        "{bfd-decay-min-rx=\"2000\", bfd-min-rx=\"100\", bfd-min-tx=\"100\", bfd-mult=\"5\", \
         northd_probe_interval=\"5000\"}"
    );
    assert!(
        reconcile(&client, &cache, &BfdTimers::default())
            .await
            .is_empty(),
        "nothing configured: nothing written"
    );
    client.close();
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_controller_writes_its_bfd_flags_to_nb_and_without_them_leaves_nb_global_alone() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    nbctl(&nb, &["init"]);
    nbctl(
        &nb,
        &[
            "set",
            "NB_Global",
            ".",
            "options:northd_probe_interval=5000",
        ],
    );
    let dir = tempfile::tempdir().expect("tmp");
    let ctl = Controller::start(
        dir.path(),
        &nb.unix_remote(),
        &["--bfd-min-rx-ms=100", "--bfd-min-tx-ms=150", "--bfd-mult=4"],
    );
    let want = "{bfd-min-rx=\"100\", bfd-min-tx=\"150\", bfd-mult=\"4\", \
                northd_probe_interval=\"5000\"}";
    wait_for(
        "the BFD timers in NB_Global",
        Duration::from_secs(30),
        || options(&nb) == want,
    );
    drop(ctl);

    // Restarted without the flags, after an operator changed one timer: a controller that
    // is not configured to own the timers does not touch them.
    nbctl(&nb, &["set", "NB_Global", ".", "options:bfd-mult=7"]);
    let status = dir.path().join(".status/controller.yaml");
    let _ = std::fs::remove_file(&status);
    let _ctl = Controller::start(dir.path(), &nb.unix_remote(), &[]);
    wait_for("a finished pass", Duration::from_secs(30), || {
        status.exists()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        options(&nb),
        "{bfd-min-rx=\"100\", bfd-min-tx=\"150\", bfd-mult=\"7\", \
         northd_probe_interval=\"5000\"}"
    );
}
