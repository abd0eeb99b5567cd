//! Monitor fallback to older methods. ovsdb-server 3.1 speaks all of them, so an old server
//! is played by a small peer on a unix socket that answers `unknown method` to
//! `monitor_cond_since` and `monitor_cond`, like servers before OVS 2.9 / 2.12 did.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_util::codec::Framed;
use ycloud_ovsdb::cache::Cache;
use ycloud_ovsdb::client::MonitorMethod;
use ycloud_ovsdb::codec::JsonCodec;
use ycloud_ovsdb::schema::DatabaseSchema;
use ycloud_ovsdb::{Client, ClientConfig};

const LS1: &str = "8a5b2c6e-0000-4000-8000-000000000001";
const LS2: &str = "8a5b2c6e-0000-4000-8000-000000000002";

/// Serves one connection like an old ovsdb-server; reports the methods it saw and when the
/// client hung up.
async fn old_server(
    listener: tokio::net::UnixListener,
    seen: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let (s, _) = listener.accept().await.unwrap();
    let mut framed = Framed::new(s, JsonCodec::default());
    while let Some(Ok(msg)) = framed.next().await {
        let method = msg["method"].as_str().unwrap_or("").to_owned();
        let id = msg["id"].clone();
        let _ = seen.send(method.clone());
        let reply = match method.as_str() {
            "monitor" if msg["params"][0] == "_Server" => {
                json!({"id": id, "result": null, "error": "unknown database"})
            }
            "monitor_cond_since" | "monitor_cond" => {
                json!({"id": id, "result": null, "error": "unknown method"})
            }
            "monitor" => {
                let mid = msg["params"][1].clone();
                let reply = json!({"id": id, "error": null,
                    "result": {"Logical_Switch": {LS1: {"new": {"name": "ls1"}}}}});
                framed.send(reply).await.unwrap();
                // A later change, as an RFC 7047 `update`.
                json!({"id": null, "method": "update", "params": [mid,
                    {"Logical_Switch": {LS2: {"new": {"name": "ls2"}},
                                        LS1: {"old": {"name": "ls1"}, "new": {"name": "ls1b"}}}}]})
            }
            "echo" => json!({"id": id, "result": msg["params"], "error": null}),
            "get_schema" => {
                let text = std::fs::read_to_string("/usr/share/ovn/ovn-nb.ovsschema").unwrap();
                let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
                json!({"id": id, "result": schema, "error": null})
            }
            _ => json!({"id": id, "result": null, "error": "unknown method"}),
        };
        framed.send(reply).await.unwrap();
    }
    let _ = seen.send("<closed>".into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_monitor_cond_gets_a_plain_monitor_and_its_updates_reach_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(old_server(listener, tx));

    let mut config = ClientConfig::new(vec![format!("unix:{}", path.display())], "OVN_Northbound");
    config.request_timeout = Duration::from_secs(5);
    let (client, _events) = Client::connect(config).await.unwrap();
    let schema = Arc::new(DatabaseSchema::from_file("/usr/share/ovn/ovn-nb.ovsschema").unwrap());
    let cache = Cache::new(
        schema,
        BTreeMap::from([("Logical_Switch".to_string(), None)]),
    )
    .unwrap();
    let handle = client.monitor_cache(&cache).await.unwrap();
    assert_eq!(handle.method, MonitorMethod::Plain);

    let names = || -> Vec<String> {
        let mut v: Vec<String> = cache
            .snapshot()
            .rows("Logical_Switch")
            .map(|(_, r)| r["name"].as_atom().unwrap().as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while names() != ["ls1b", "ls2"] {
        assert!(Instant::now() < deadline, "cache has {:?}", names());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Dropping the last handle closes the connection.
    drop(client);
    let mut methods: Vec<String> = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await {
        let closed = m == "<closed>";
        methods.push(m);
        if closed {
            break;
        }
    }
    assert_eq!(
        methods,
        [
            "monitor",
            "get_schema",
            "monitor_cond_since",
            "monitor_cond",
            "monitor",
            "<closed>"
        ],
        "_Server probe, schema, then newest to oldest monitor method, then hang-up"
    );
    server.await.unwrap();
}
