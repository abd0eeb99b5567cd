//! The client against a real 3-member OVN_Northbound RAFT cluster: leader-only use, failover
//! when the leader is killed during a stream of transactions, and monitor resume.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ycloud_ovsdb::cache::Cache;
use ycloud_ovsdb::ops;
use ycloud_ovsdb::schema::DatabaseSchema;
use ycloud_ovsdb::value::Row;
use ycloud_ovsdb::{Client, ClientConfig};
use ycloud_testsupport::ovsdb_server::{OvsdbCluster, SchemaFile};

fn config(remotes: Vec<String>) -> ClientConfig {
    let mut c = ClientConfig::new(remotes, "OVN_Northbound");
    c.leader_only = true;
    c.backoff.initial = Duration::from_millis(20);
    c.backoff.max = Duration::from_millis(300);
    c.request_timeout = Duration::from_secs(20);
    c.probe_interval = Some(Duration::from_secs(2));
    c
}

fn address_set(name: &str) -> Row {
    [("name".to_string(), name.into())].into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_the_leader_when_it_is_killed_and_loses_or_duplicates_no_transaction() {
    let mut cluster = OvsdbCluster::start(SchemaFile::Nb, 3).unwrap();
    let remotes = cluster.remotes();
    let leader = cluster.leader();
    // Start from a follower first in the list: leader-only must skip it.
    let mut ordered = remotes.clone();
    ordered.rotate_left((leader + 1) % 3);
    let (c, _events) = Client::connect(config(ordered)).await.unwrap();
    assert_eq!(
        c.current_remote().as_deref(),
        Some(remotes[leader].as_str())
    );

    let schema = Arc::new(DatabaseSchema::from_file("/usr/share/ovn/ovn-nb.ovsschema").unwrap());
    let mut tables = BTreeMap::new();
    tables.insert("Address_Set".to_string(), Some(vec!["name".to_string()]));
    let cache = Cache::new(schema, tables).unwrap();
    c.monitor_cache(&cache).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (c, stop) = (c.clone(), stop.clone());
        async move {
            let mut outcomes = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("txn{i}");
                i += 1;
                let r = c
                    .transact(&[ops::insert("Address_Set", address_set(&name), "a")])
                    .await;
                outcomes.push((name, Instant::now(), r));
            }
            outcomes
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    cluster.kill(leader);
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    // Keep writing a while on the new leader.
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.current_remote().as_deref() != Some(remotes[new_leader].as_str()) {
        assert!(
            Instant::now() < deadline,
            "client never moved to the new leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = writer.await.unwrap();

    let first_ok_after_kill = outcomes
        .iter()
        .filter(|(_, t, r)| *t > killed_at && r.is_ok())
        .map(|(_, t, _)| *t)
        .min()
        .expect("transactions succeed after the failover");
    let failover = first_ok_after_kill - killed_at;
    let failed = outcomes.iter().filter(|(_, _, r)| r.is_err()).count();
    eprintln!(
        "{} transactions, {failed} failed, first commit after killing the leader: {failover:?}",
        outcomes.len()
    );
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );

    let dump = cluster.dump_json();
    let mut on_server: BTreeMap<String, usize> = BTreeMap::new();
    for r in dump["Address_Set"].as_object().unwrap().values() {
        *on_server
            .entry(r["name"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for (name, _, r) in &outcomes {
        match r {
            Ok(_) => assert_eq!(
                on_server.get(name),
                Some(&1),
                "{name} committed exactly once"
            ),
            Err(e) => {
                assert!(e.is_retriable(), "{name}: {e}");
                assert!(
                    on_server.get(name).copied().unwrap_or(0) <= 1,
                    "{name} duplicated"
                );
            }
        }
    }
    // Nothing on the server that we did not send.
    assert!(
        on_server
            .keys()
            .all(|n| outcomes.iter().any(|(m, _, _)| m == n))
    );

    // The monitor resumed on the new leader and the cache matches the cluster.
    let names = |cache: &Cache| {
        let mut v: Vec<String> = cache
            .snapshot()
            .rows("Address_Set")
            .map(|(_, r)| r["name"].as_atom().unwrap().as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let want: Vec<String> = on_server.keys().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while names(&cache) != want {
        assert!(Instant::now() < deadline, "cache differs from the cluster");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed = c.stats().resumed_monitors.load(Ordering::Relaxed);
    let reloaded = c.stats().reloaded_monitors.load(Ordering::Relaxed);
    eprintln!("monitors resumed {resumed}, reloaded {reloaded}");
    assert!(
        resumed >= 1,
        "monitor_cond_since resumed without a reload (found = true)"
    );

    // The killed member comes back as a follower; the client stays on the leader.
    cluster.restart(leader).unwrap();
    c.transact(&[ops::insert(
        "Address_Set",
        address_set("after-restart"),
        "a",
    )])
    .await
    .unwrap();
    assert_eq!(
        c.current_remote().as_deref(),
        Some(remotes[new_leader].as_str())
    );
}
