//! The client against a real `ovsdb-server` with the real OVN NB schema: transactions and
//! their errors, locks between two clients, monitors feeding the cache, reconnects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;
use ycloud_ovsdb::cache::Cache;
use ycloud_ovsdb::client::{Event, MonitorRequests, TableMonitor};
use ycloud_ovsdb::ops::{self, Condition, Operation};
use ycloud_ovsdb::schema::DatabaseSchema;
use ycloud_ovsdb::value::{Row, Value};
use ycloud_ovsdb::{Client, ClientConfig, Error};
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

const NB: &str = "OVN_Northbound";

fn nb_schema() -> Arc<DatabaseSchema> {
    Arc::new(DatabaseSchema::from_file("/usr/share/ovn/ovn-nb.ovsschema").unwrap())
}

fn config(remotes: Vec<String>) -> ClientConfig {
    let mut c = ClientConfig::new(remotes, NB);
    c.backoff.initial = Duration::from_millis(20);
    c.backoff.max = Duration::from_millis(500);
    c.request_timeout = Duration::from_secs(20);
    c
}

async fn client(remote: String) -> (Client, mpsc::UnboundedReceiver<Event>) {
    Client::connect(config(vec![remote])).await.unwrap()
}

fn row(pairs: &[(&str, Value)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The cache contents in the shape of `OvsdbServer::dump_json()`, both sides normalized
/// against the schema so that `["set",[x]]` and a bare `x` compare equal.
fn cache_json(cache: &Cache) -> serde_json::Value {
    let snap = cache.snapshot();
    let mut out = serde_json::Map::new();
    for table in cache.monitored().keys() {
        let mut rows = serde_json::Map::new();
        for (uuid, r) in snap.rows(table) {
            let r: serde_json::Map<_, _> = r
                .iter()
                .filter(|(c, _)| !c.starts_with('_'))
                .map(|(c, v)| (c.clone(), serde_json::to_value(v).unwrap()))
                .collect();
            rows.insert(uuid.to_string(), serde_json::Value::Object(r));
        }
        out.insert(table.clone(), serde_json::Value::Object(rows));
    }
    serde_json::Value::Object(out)
}

fn normalized_dump(
    dump: &serde_json::Value,
    schema: &DatabaseSchema,
    tables: &[&str],
) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for t in tables {
        let mut rows = serde_json::Map::new();
        for (uuid, r) in dump[*t].as_object().unwrap() {
            let mut nr = serde_json::Map::new();
            for (c, v) in r.as_object().unwrap() {
                let v: Value = serde_json::from_value(v.clone()).unwrap();
                let v = schema.column(t, c).unwrap().normalize(v);
                nr.insert(c.clone(), serde_json::to_value(&v).unwrap());
            }
            rows.insert(uuid.clone(), serde_json::Value::Object(nr));
        }
        out.insert(t.to_string(), serde_json::Value::Object(rows));
    }
    serde_json::Value::Object(out)
}

fn normalized_cache(cache: &Cache) -> serde_json::Value {
    let schema = cache.schema().clone();
    let raw = cache_json(cache);
    let tables: Vec<&str> = raw
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    normalized_dump(&raw, &schema, &tables)
}

async fn next_lock_event(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(e, Event::Locked { .. } | Event::Stolen { .. }) {
            return e;
        }
    }
}

async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transact_maps_named_uuids_to_the_uuids_the_server_assigned() {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (c, _events) = client(server.unix_remote()).await;
    assert_eq!(
        c.list_dbs().await.unwrap(),
        vec![NB.to_string(), "_Server".to_string()]
    );
    assert_eq!(c.get_schema(NB).await.unwrap().name, NB);
    assert_eq!(c.echo(json!(["x", 1])).await.unwrap(), json!(["x", 1]));
    c.set_db_change_aware(true).await.unwrap();
    let txn = vec![
        ops::insert("Logical_Switch_Port", row(&[("name", "p1".into())]), "p1"),
        ops::insert(
            "Logical_Switch",
            row(&[
                ("name", "ls1".into()),
                (
                    "ports",
                    Value::set([Value::named_uuid("p1").as_atom().unwrap().clone()]),
                ),
            ]),
            "ls1",
        ),
    ];
    let done = c.transact(&txn).await.unwrap();
    let dump = server.dump_json();
    let ls = done.uuids["ls1"].to_string();
    let p1 = done.uuids["p1"].to_string();
    assert_eq!(dump["Logical_Switch"][&ls]["name"], "ls1");
    assert_eq!(dump["Logical_Switch"][&ls]["ports"], json!(["uuid", p1]));
    assert_eq!(dump["Logical_Switch_Port"][&p1]["name"], "p1");

    // select and a count from update.
    let sel = c
        .transact(&[ops::select(
            "Logical_Switch",
            vec![Condition::eq("name", "ls1")],
        )])
        .await
        .unwrap();
    assert!(matches!(&sel.results[0], ops::OperationResult::Rows(r) if r.len() == 1));
    let upd = c
        .transact(&[ops::update(
            "Logical_Switch",
            done.uuids["ls1"],
            row(&[("name", "ls1b".into())]),
        )])
        .await
        .unwrap();
    assert_eq!(upd.results[0], ops::OperationResult::Count(1));
}

#[tokio::test]
async fn borrowed_operations_transact_like_owned_ones_and_the_request_size_is_reported() {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (c, _events) = client(server.unix_remote()).await;
    let sw = |name: &str| ops::insert("Logical_Switch", row(&[("name", name.into())]), "s");
    // Owned, by reference and as `Cow`s: the same request.
    let owned = c.transact(&[sw("a")]).await.unwrap();
    let one = sw("b");
    let by_ref = c.transact(&[&one]).await.unwrap();
    let cows = [std::borrow::Cow::Borrowed(&sw("c"))];
    let cow = c.transact(&cows).await.unwrap();
    // Each request is its envelope plus its operations: a name one character longer
    // makes a request one byte longer (the ids here have one digit each).
    let longer = c.transact(&[sw("dd")]).await.unwrap();
    let envelope = |id: u64| {
        serde_json::to_vec(&json!({"id": id, "method": "transact", "params": [NB]}))
            .unwrap()
            .len()
    };
    let ops_bytes = serde_json::to_vec(&sw("a")).unwrap().len() + 1; // and a comma
    assert_eq!(owned.request_bytes, envelope(1) + ops_bytes);
    assert_eq!(by_ref.request_bytes, owned.request_bytes);
    assert_eq!(cow.request_bytes, owned.request_bytes);
    assert_eq!(longer.request_bytes, owned.request_bytes + 1);
    let names: Vec<String> = server.dump_json()["Logical_Switch"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(names, ["a", "b", "c", "dd"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_failures_become_typed_errors_with_the_servers_details() {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (c, _events) = client(server.tcp_remote()).await;
    let aset = |name: &str| ops::insert("Address_Set", row(&[("name", name.into())]), "a");
    c.transact(&[aset("as1")]).await.unwrap();

    // Address_Set has a unique index on name.
    let err = c.transact(&[aset("as1")]).await.unwrap_err();
    assert!(
        matches!(&err, Error::ConstraintViolation { details: Some(d) } if d.contains("as1")),
        "{err}"
    );
    assert!(!err.is_retriable());

    let ghost = Uuid::new_v4();
    let err = c
        .transact(&[ops::insert(
            "Logical_Switch",
            row(&[("name", "ls".into()), ("ports", Value::set([ghost]))]),
            "ls",
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ReferentialIntegrity { details: Some(d) } if d.contains(&ghost.to_string())),
        "{err}"
    );

    // The duplicate-insert guard: waits for "no row named as1", which never holds.
    let err = c
        .transact(&[ops::wait_absent("Address_Set", "name", "as1"), aset("as1")])
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Timeout { .. }), "{err}");

    // Caught by the client's schema check, or (checks off) by the server.
    let bad = [ops::select("No_Such_Table", vec![])];
    let err = c.transact(&bad).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(e) if e.to_string().contains("No_Such_Table")),
        "{err}"
    );
    let mut unchecked = config(vec![server.unix_remote()]);
    unchecked.validate = false;
    let (raw, _ev) = Client::connect(unchecked).await.unwrap();
    let err = raw.transact(&bad).await.unwrap_err();
    assert!(
        matches!(&err, Error::Server { error, details: Some(d) }
            if error == "syntax error" && d.contains("No_Such_Table")),
        "{err}"
    );

    // Nothing of the failed transactions was committed.
    let dump = server.dump_json();
    assert_eq!(dump["Address_Set"].as_object().unwrap().len(), 1);
    assert_eq!(dump["Logical_Switch"], json!({}));

    // Checked against the schema before sending: an enum value the column does not allow.
    let lb = ops::insert(
        "Load_Balancer",
        row(&[("name", "lb".into()), ("protocol", "xyz".into())]),
        "lb",
    );
    let err = c.transact(&[lb]).await.unwrap_err();
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(matches!(err, Error::Invalid(_)), "{text}");
    assert!(
        text.contains("Load_Balancer") && text.contains("protocol") && text.contains("xyz"),
        "{text}"
    );
    assert_eq!(server.dump_json()["Load_Balancer"], json!({}));

    // An explicit abort.
    let err = c
        .transact(&[aset("as2"), Operation::Abort])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Server { error, .. } if error == "aborted"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_passes_between_two_clients_by_unlock_and_by_steal() {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (a, mut a_events) = client(server.unix_remote()).await;
    let (b, mut b_events) = client(server.unix_remote()).await;
    assert!(a.lock("leader").await.unwrap());
    assert!(!b.lock("leader").await.unwrap(), "a holds it");
    // `assert` on the lock: a may write, b may not.
    let guarded = |name: &str| {
        vec![
            Operation::Assert {
                lock: "leader".into(),
            },
            ops::insert("Address_Set", row(&[("name", name.into())]), "a"),
        ]
    };
    a.transact(&guarded("by-a")).await.unwrap();
    let err = b.transact(&guarded("by-b")).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotLeader { .. } | Error::Server { .. }),
        "{err}"
    );

    a.unlock("leader").await.unwrap();
    assert_eq!(
        next_lock_event(&mut b_events).await,
        Event::Locked {
            lock: "leader".into()
        }
    );
    assert!(a.lock("leader").await.is_ok_and(|l| !l), "b holds it now");
    // The server wants a queued lock request withdrawn before a steal.
    a.unlock("leader").await.unwrap();
    a.steal("leader").await.unwrap();
    // ovsdb-server 3.1 re-sends `locked` to the holder when a waiter unlocks: skip those.
    let mut e = next_lock_event(&mut b_events).await;
    while e
        == (Event::Locked {
            lock: "leader".into(),
        })
    {
        e = next_lock_event(&mut b_events).await;
    }
    assert_eq!(
        e,
        Event::Stolen {
            lock: "leader".into()
        }
    );
    // Now only a may write under the lock.
    a.transact(&guarded("by-a-again")).await.unwrap();
    assert!(b.transact(&guarded("by-b-again")).await.is_err());
    let _ = &mut a_events;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitored_cache_follows_inserts_modifies_and_deletes_and_equals_the_server() {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (c, _events) = client(server.unix_remote()).await;
    c.transact(&[ops::insert(
        "Logical_Switch",
        row(&[("name", "before".into())]),
        "x",
    )])
    .await
    .unwrap();
    let cache = Cache::all_tables(nb_schema());
    let mut changes = cache.subscribe();
    let m = c.monitor_cache(&cache).await.unwrap();
    assert_eq!(m.method, ycloud_ovsdb::client::MonitorMethod::CondSince);
    assert_eq!(
        cache.snapshot().len("Logical_Switch"),
        1,
        "initial rows are in before monitor returns"
    );

    let done = c
        .transact(&[ops::insert(
            "Logical_Switch",
            row(&[
                ("name", "ls".into()),
                ("external_ids", Value::map([("k1", "v1"), ("k2", "v2")])),
            ]),
            "ls",
        )])
        .await
        .unwrap();
    let ls = done.uuids["ls"];
    // Wire order: the update is applied before transact returns.
    assert!(cache.snapshot().get("Logical_Switch", &ls).is_some());
    c.transact(&[ops::map_set_keys(
        "Logical_Switch",
        ls,
        "external_ids",
        [("k1", "v1b"), ("k3", "v3")],
    )])
    .await
    .unwrap();
    c.transact(&[ops::map_delete_keys(
        "Logical_Switch",
        ls,
        "external_ids",
        ["k2"],
    )])
    .await
    .unwrap();
    let ids = cache.snapshot().get("Logical_Switch", &ls).unwrap()["external_ids"].clone();
    assert_eq!(ids, Value::map([("k1", "v1b"), ("k3", "v3")]));
    let schema = nb_schema();
    let tables: Vec<&str> = schema.tables.keys().map(String::as_str).collect();
    assert_eq!(
        normalized_cache(&cache),
        normalized_dump(&server.dump_json(), &schema, &tables)
    );

    c.transact(&[ops::delete("Logical_Switch", ls)])
        .await
        .unwrap();
    assert!(cache.snapshot().get("Logical_Switch", &ls).is_none());
    let mut kinds = Vec::new();
    while let Ok(ch) = changes.try_recv() {
        if ch.uuid == ls {
            kinds.push(format!("{:?}", ch.kind));
        }
    }
    assert_eq!(kinds, ["Insert", "Modify", "Modify", "Delete"]);
    c.monitor_cancel(&m).await.unwrap();
    c.transact(&[ops::insert(
        "Logical_Switch",
        row(&[("name", "after".into())]),
        "y",
    )])
    .await
    .unwrap();
    assert_eq!(
        cache.snapshot().len("Logical_Switch"),
        1,
        "a cancelled monitor feeds nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_monitor_conditions_adds_matching_rows_and_removes_the_others() {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (c, _events) = client(server.unix_remote()).await;
    for n in ["a", "b", "c"] {
        c.transact(&[ops::insert(
            "Logical_Switch",
            row(&[("name", n.into())]),
            "x",
        )])
        .await
        .unwrap();
    }
    let mut mon = BTreeMap::new();
    mon.insert("Logical_Switch".to_string(), None);
    let cache = Cache::new(nb_schema(), mon).unwrap();
    let only = |name: &str| -> MonitorRequests {
        [(
            "Logical_Switch".to_string(),
            TableMonitor {
                columns: None,
                where_: Some(json!([["name", "==", name]])),
            },
        )]
        .into()
    };
    let m = c.monitor(only("a"), Arc::new(cache.clone())).await.unwrap();
    let names = |cache: &Cache| {
        let mut v: Vec<String> = cache
            .snapshot()
            .rows("Logical_Switch")
            .map(|(_, r)| r["name"].as_atom().unwrap().as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&cache), ["a"]);
    c.monitor_cond_change(&m, only("b")).await.unwrap();
    eventually("condition change applied", Duration::from_secs(5), || {
        names(&cache) == ["b"]
    })
    .await;
}

/// A `Logical_Switch` monitor request with `where_` as its condition.
fn switches_where(where_: Option<serde_json::Value>) -> MonitorRequests {
    [(
        "Logical_Switch".to_string(),
        TableMonitor {
            columns: None,
            where_,
        },
    )]
    .into()
}

fn switch_cache() -> Cache {
    let mut mon = BTreeMap::new();
    mon.insert("Logical_Switch".to_string(), None);
    Cache::new(nb_schema(), mon).unwrap()
}

async fn insert_switches(c: &Client, names: impl Iterator<Item = String>) {
    let ops: Vec<Operation> = names
        .enumerate()
        .map(|(i, n)| {
            ops::insert(
                "Logical_Switch",
                row(&[("name", n.into())]),
                format!("s{i}"),
            )
        })
        .collect();
    c.transact(&ops).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_widened_condition_adds_are_in_the_cache_when_monitor_cond_change_returns() {
    // The controller's cold start relies on this: it excludes the rows it writes, then
    // widens the condition again and plans on the cache right after the call returns.
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (c, _events) = client(server.unix_remote()).await;
    let cache = switch_cache();
    let m = c
        .monitor(
            switches_where(Some(json!([false]))),
            Arc::new(cache.clone()),
        )
        .await
        .unwrap();
    insert_switches(&c, (0..3_000).map(|i| format!("s{i}"))).await;
    assert_eq!(cache.snapshot().len("Logical_Switch"), 0, "excluded rows");
    c.monitor_cond_change(&m, switches_where(None))
        .await
        .unwrap();
    // No waiting: the server sends the rows before its reply.
    assert_eq!(cache.snapshot().len("Logical_Switch"), 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_and_restart_the_cache_reloads_and_equals_the_server() {
    let mut server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (c, mut events) = client(server.tcp_remote()).await;
    let cache = Cache::all_tables(nb_schema());
    c.monitor_cache(&cache).await.unwrap();
    c.transact(&[ops::insert(
        "Logical_Switch",
        row(&[("name", "one".into())]),
        "x",
    )])
    .await
    .unwrap();
    server.kill();
    server.restart().unwrap();
    // Changed behind the client's back while it reconnects.
    server
        .ovsdb_client(&["transact", r#"["OVN_Northbound",{"op":"insert","table":"Logical_Switch","row":{"name":"two"}},{"op":"delete","table":"Logical_Switch","where":[["name","==","one"]]}]"#])
        .unwrap();
    let schema = nb_schema();
    let tables: Vec<&str> = schema.tables.keys().map(String::as_str).collect();
    let want = normalized_dump(&server.dump_json(), &schema, &tables);
    eventually(
        "cache reloaded after restart",
        Duration::from_secs(10),
        || normalized_cache(&cache) == want,
    )
    .await;
    let mut saw_disconnect = false;
    while let Ok(e) = events.try_recv() {
        saw_disconnect |= matches!(e, Event::Disconnected { .. });
    }
    assert!(saw_disconnect);
    assert!(
        c.stats()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    // And the client transacts again on the new connection.
    c.transact(&[ops::insert(
        "Logical_Switch",
        row(&[("name", "three".into())]),
        "x",
    )])
    .await
    .unwrap();
    assert_eq!(cache.snapshot().len("Logical_Switch"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_cut_by_a_server_kill_are_committed_once_or_fail_and_are_never_resent() {
    let mut server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (c, _events) = client(server.tcp_remote()).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (c, stop) = (c.clone(), stop.clone());
        async move {
            let mut outcomes = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("as{i}");
                i += 1;
                let r = c
                    .transact(&[ops::insert(
                        "Address_Set",
                        row(&[("name", name.as_str().into())]),
                        "a",
                    )])
                    .await;
                outcomes.push((name, r));
            }
            outcomes
        }
    });
    // One transaction certainly in flight at the kill: it waits (60 s) for a row that never
    // comes.
    let blocked = tokio::spawn({
        let c = c.clone();
        async move {
            let wait = Operation::Wait {
                table: "Address_Set".into(),
                where_: vec![Condition::eq("name", "never")],
                columns: vec!["name".into()],
                until: ops::Until::Eq,
                rows: vec![row(&[("name", "never".into())])],
                timeout: Some(60_000),
            };
            c.transact(&[
                wait,
                ops::insert("Address_Set", row(&[("name", "blocked".into())]), "b"),
            ])
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = blocked.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Disconnected {
                retriable: true,
                ..
            }
        ),
        "{err}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "{} transactions, {} failed",
        outcomes.len(),
        outcomes.iter().filter(|(_, r)| r.is_err()).count()
    );
    let dump = server.dump_json();
    let mut on_server: BTreeMap<String, usize> = BTreeMap::new();
    for r in dump["Address_Set"].as_object().unwrap().values() {
        *on_server
            .entry(r["name"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let mut failed = 0;
    for (name, r) in &outcomes {
        match r {
            Ok(_) => assert_eq!(
                on_server.get(name),
                Some(&1),
                "{name} committed exactly once"
            ),
            Err(e) => {
                failed += 1;
                assert!(e.is_retriable(), "{name}: {e}");
                // Cut mid-flight: committed or not, but never twice (names are unique-indexed,
                // a resend would show up as a constraint violation error, not as a row).
                assert!(on_server.get(name).copied().unwrap_or(0) <= 1);
            }
        }
    }
    eprintln!("{failed} of the stream's transactions were cut by the kill");
    assert!(outcomes.iter().filter(|(_, r)| r.is_ok()).count() > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_detected_by_our_probe_and_the_client_reconnects_when_it_thaws() {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let mut cfg = config(vec![server.tcp_remote()]);
    cfg.probe_interval = Some(Duration::from_millis(200));
    let (c, mut events) = Client::connect(cfg).await.unwrap();
    let pid = server.pid().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    // Resume the server even if an assertion below fails, so Drop can reap it.
    struct Thaw(String);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &self.0])
                .status();
        }
    }
    let _thaw = Thaw(pid.clone());
    signal("-STOP");
    let started = Instant::now();
    let err = c
        .transact(&[ops::insert(
            "Address_Set",
            row(&[("name", "frozen".into())]),
            "a",
        )])
        .await
        .unwrap_err();
    let detected = started.elapsed();
    assert!(
        matches!(
            err,
            Error::Disconnected {
                retriable: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        detected < Duration::from_secs(3),
        "dead connection noticed after {detected:?}"
    );
    let mut reason = String::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
        if let Event::Disconnected { reason: r } = e {
            reason = r;
            break;
        }
    }
    assert!(reason.contains("echo probe"), "{reason}");
    signal("-CONT");
    c.transact(&[ops::insert(
        "Address_Set",
        row(&[("name", "thawed".into())]),
        "a",
    )])
    .await
    .unwrap();
    eprintln!("frozen server detected after {detected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_load_balancers_go_in_one_transaction_and_a_new_monitor_loads_them_all() {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (c, _events) = client(server.unix_remote()).await;
    let lbs: Vec<Operation> = (0..10_000)
        .map(|i| {
            let vips = Value::map([(
                format!("172.30.{}.{}:80", i / 250, i % 250),
                (0..8)
                    .map(|b| format!("10.1.{}.{b}:8080", i % 250))
                    .collect::<Vec<_>>()
                    .join(","),
            )]);
            ops::insert(
                "Load_Balancer",
                row(&[
                    ("name", format!("lb{i}").into()),
                    ("protocol", "tcp".into()),
                    ("vips", vips),
                    (
                        "external_ids",
                        Value::map([("ycloud/owner", format!("svc{i}"))]),
                    ),
                ]),
                format!("lb{i}"),
            )
        })
        .collect();
    let t = Instant::now();
    let done = c.transact(&lbs).await.unwrap();
    let insert = t.elapsed();
    assert_eq!(done.uuids.len(), 10_000);

    let (c2, _e2) = client(server.unix_remote()).await;
    let mut tables = BTreeMap::new();
    tables.insert("Load_Balancer".to_string(), None);
    let cache = Cache::new(nb_schema(), tables).unwrap();
    let t = Instant::now();
    c2.monitor_cache(&cache).await.unwrap();
    let monitor = t.elapsed();
    assert_eq!(cache.snapshot().len("Load_Balancer"), 10_000);
    eprintln!(
        "10k LB insert in one transaction: {insert:?}; initial monitor of 10k LBs: {monitor:?} (this build's profile)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_schema_does_not_fit_the_models_is_refused_with_the_mismatches() {
    let nb = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let mut cfg = config(vec![nb.unix_remote()]);
    cfg.models = Some(ycloud_ovsdb::client::ModelCheck {
        ours: ycloud_ovsdb::models::nb::schema(),
        tables: Some(vec!["Load_Balancer".into(), "Logical_Switch".into()]),
    });
    let (c, _events) = Client::connect(cfg.clone()).await.unwrap();
    assert_eq!(c.schema().unwrap().name, NB);

    // The same models against a server that serves OVN_Northbound from another schema: a
    // Logical_Switch table without most columns.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old-nb.ovsschema");
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("/usr/share/ovn/ovn-nb.ovsschema").unwrap())
            .unwrap();
    schema["tables"]["Logical_Switch"]["columns"]
        .as_object_mut()
        .unwrap()
        .retain(|c, _| c == "name");
    std::fs::write(&path, schema.to_string()).unwrap();
    let old = OvsdbServer::start(SchemaFile::Path(path)).unwrap();
    cfg.remotes = vec![old.unix_remote()];
    cfg.request_timeout = Duration::from_secs(1);
    let err = Client::connect(cfg).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NotConnected { .. }), "{text}");
    assert!(
        text.contains("does not fit the models") && text.contains("Logical_Switch"),
        "{text}"
    );
    assert!(text.contains("ports"), "names a missing column: {text}");
}

/// A cache behind a target that counts the updates it gets as text and refuses one on
/// request, to see the client's text path and its resync from the outside.
struct CountingTarget {
    cache: Cache,
    texts: std::sync::atomic::AtomicUsize,
    refuse_next: std::sync::atomic::AtomicBool,
}

impl ycloud_ovsdb::client::MonitorTarget for CountingTarget {
    fn apply(
        &self,
        _format: ycloud_ovsdb::client::UpdateFormat,
        _table_updates: &serde_json::Value,
    ) -> Result<(), String> {
        Err("the client should hand this target text, not a tree".into())
    }

    fn apply_str(
        &self,
        format: ycloud_ovsdb::client::UpdateFormat,
        table_updates: &str,
    ) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        if self.refuse_next.swap(false, Ordering::SeqCst) {
            return Err("refused by the test".into());
        }
        self.texts.fetch_add(1, Ordering::SeqCst);
        ycloud_ovsdb::client::MonitorTarget::apply_str(&self.cache, format, table_updates)
    }

    fn clear(&self) {
        self.cache.clear()
    }

    fn set_last_txn_id(&self, id: Option<String>) {
        self.cache.set_last_txn_id(id)
    }

    fn last_txn_id(&self) -> Option<String> {
        self.cache.last_txn_id()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_replies_and_updates_reach_the_target_as_text_and_a_refused_update_reloads_it() {
    use std::sync::atomic::Ordering;
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (c, mut events) = client(server.unix_remote()).await;
    c.transact(&[ops::insert(
        "Logical_Switch",
        row(&[("name", "before".into())]),
        "x",
    )])
    .await
    .unwrap();
    let target = Arc::new(CountingTarget {
        cache: Cache::new(nb_schema(), [("Logical_Switch".to_string(), None)].into()).unwrap(),
        texts: 0.into(),
        refuse_next: false.into(),
    });
    let requests: MonitorRequests =
        [("Logical_Switch".to_string(), TableMonitor::default())].into();
    let m = c.monitor(requests, target.clone()).await.unwrap();
    assert_eq!(target.cache.snapshot().len("Logical_Switch"), 1);
    c.transact(&[ops::insert(
        "Logical_Switch",
        row(&[("name", "after".into())]),
        "y",
    )])
    .await
    .unwrap();
    // The initial reply and the update, both as text (`apply` would have failed).
    assert_eq!(target.texts.load(Ordering::SeqCst), 2);
    assert_eq!(target.cache.snapshot().len("Logical_Switch"), 2);

    // A refused update: the client reports it, reconnects and reloads the monitor.
    let reloads = c.stats().reloaded_monitors.load(Ordering::SeqCst);
    target.refuse_next.store(true, Ordering::SeqCst);
    // The refused update drops the connection, which races with reading this transaction's
    // reply (sent right after the update): either it is read first, or the transaction
    // fails as `Disconnected` ("may or may not have been executed"). It was executed
    // either way: the reload below finds its row.
    match c
        .transact(&[ops::insert(
            "Logical_Switch",
            row(&[("name", "lost".into())]),
            "z",
        )])
        .await
    {
        Ok(_) | Err(Error::Disconnected { .. }) => {}
        Err(e) => panic!("unexpected transaction error: {e:?}"),
    }
    let error = loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an event")
            .expect("events open");
        if let Event::MonitorError { monitor, error } = e {
            assert_eq!(monitor, m.id);
            break error;
        }
    };
    assert_eq!(error, "refused by the test");
    eventually("the monitor to reload", Duration::from_secs(10), || {
        c.stats().reloaded_monitors.load(Ordering::SeqCst) > reloads
            && target.cache.snapshot().len("Logical_Switch") == 3
    })
    .await;
    let schema = nb_schema();
    assert_eq!(
        normalized_cache(&target.cache),
        normalized_dump(&server.dump_json(), &schema, &["Logical_Switch"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_cannot_be_encoded_is_refused_before_sending_and_the_connection_stays_usable()
 {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let mut cfg = config(vec![server.unix_remote()]);
    // Schema validation off, so that the encoder is what meets the bad value.
    cfg.validate = false;
    let (c, _events) = Client::connect(cfg).await.unwrap();
    let bad = [ops::insert(
        "Logical_Switch",
        row(&[(
            "name",
            Value::Atom(ycloud_ovsdb::value::Atom::Real(f64::NAN)),
        )]),
        "ls",
    )];
    let err = c.transact(&bad).await.unwrap_err();
    assert!(
        matches!(&err, Error::Encode { method, .. } if method == "transact"),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    // Nothing reached the server, and the next transaction goes through.
    assert!(
        server.dump_json()["Logical_Switch"]
            .as_object()
            .is_none_or(|rows| rows.is_empty())
    );
    let ok = [ops::insert(
        "Logical_Switch",
        row(&[("name", "ls1".into())]),
        "ls",
    )];
    let done = c.transact(&ok).await.unwrap();
    let ls = done.uuids["ls"].to_string();
    assert_eq!(server.dump_json()["Logical_Switch"][&ls]["name"], "ls1");
}
