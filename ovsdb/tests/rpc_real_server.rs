//! The JSON-RPC connection against a real `ovsdb-server` (and one fake peer that sends
//! garbage, which no real server does on purpose).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use ycloud_ovsdb::Error;
use ycloud_ovsdb::rpc::{Connection, ConnectionOptions, Notification};
use ycloud_ovsdb::transport::Remote;
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

async fn connect(remote: &str) -> (Connection, mpsc::UnboundedReceiver<Notification>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let remote: Remote = remote.parse().unwrap();
    let conn = Connection::connect(&remote, None, ConnectionOptions::default(), tx)
        .await
        .unwrap();
    (conn, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_dbs_get_schema_and_echo_work_over_unix_and_tcp() {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    for remote in [server.unix_remote(), server.tcp_remote()] {
        let (conn, _notes) = connect(&remote).await;
        let dbs = conn.call("list_dbs", json!([])).await.unwrap();
        assert_eq!(dbs, json!(["OVN_Northbound", "_Server"]), "{remote}");
        let schema = conn
            .call("get_schema", json!(["OVN_Northbound"]))
            .await
            .unwrap();
        assert_eq!(schema["name"], "OVN_Northbound");
        assert!(schema["tables"]["Load_Balancer"].is_object());
        let echo = conn
            .call("echo", json!(["a", {"b": "}{\""}]))
            .await
            .unwrap();
        assert_eq!(echo, json!(["a", {"b": "}{\""}]));
        conn.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_loopback_remote_in_brackets_connects() {
    let server = OvsdbServer::start_with_args(SchemaFile::Nb, &["--remote=ptcp:0:[::1]"]).unwrap();
    let mut port = None;
    for _ in 0..200 {
        port = server.listening_port("[::1]");
        if port.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let remote = format!("tcp:[::1]:{}", port.expect("the server listens on [::1]"));
    let (conn, _notes) = connect(&remote).await;
    assert_eq!(conn.remote(), remote);
    let dbs = conn.call("list_dbs", json!([])).await.unwrap();
    assert_eq!(dbs, json!(["OVN_Northbound", "_Server"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_database_is_an_rpc_error_naming_the_method() {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (conn, _notes) = connect(&server.unix_remote()).await;
    let err = conn.call("get_schema", json!(["Nope"])).await.unwrap_err();
    assert!(
        matches!(&err, Error::Rpc { method, error, .. } if method == "get_schema" && error == "unknown database"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_request_ignores_its_late_reply_and_the_connection_keeps_working() {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (conn, _notes) = connect(&server.unix_remote()).await;
    // Waits (up to 60 s) for a switch named "later" to exist.
    let wait = json!(["OVN_Northbound", {"op": "wait", "table": "Logical_Switch", "timeout": 60000,
        "where": [["name", "==", "later"]], "columns": ["name"], "until": "==",
        "rows": [{"name": "later"}]}]);
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let id = conn
        .send_request(
            "transact",
            wait,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.cancel(id).unwrap();
    conn.forget(id);
    // Fulfil the wait: the server now sends the reply to the forgotten request.
    let insert = json!(["OVN_Northbound",
        {"op": "insert", "table": "Logical_Switch", "row": {"name": "later"}}]);
    conn.call("transact", insert).await.unwrap();
    assert!(conn.call("echo", json!([])).await.is_ok());
    assert!(matches!(
        rx.try_recv(),
        Err(tokio::sync::oneshot::error::TryRecvError::Closed)
    ));
    assert!(!conn.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_updates_arrive_before_the_reply_of_the_transaction_that_caused_them() {
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (conn, mut notes) = connect(&server.unix_remote()).await;
    let initial = conn
        .call(
            "monitor_cond_since",
            json!(["OVN_Northbound", "m", {"Logical_Switch": [{"columns": ["name"]}]},
                   "00000000-0000-0000-0000-000000000000"]),
        )
        .await
        .unwrap();
    assert_eq!(initial[0], false, "nothing to resume from: {initial}");
    for i in 0..50 {
        let name = format!("ls{i}");
        conn.call(
            "transact",
            json!(["OVN_Northbound", {"op": "insert", "table": "Logical_Switch", "row": {"name": name}}]),
        )
        .await
        .unwrap();
        // The update3 was delivered before the transact reply was routed.
        let n = notes
            .try_recv()
            .unwrap_or_else(|_| panic!("no update before reply {i}"));
        assert_eq!(n.method, "update3");
        let rows = n.params[2]["Logical_Switch"].as_object().unwrap();
        assert_eq!(rows.values().next().unwrap()["insert"]["name"], name);
    }
}

/// A unix listener we control that accepts one connection, reads the request and answers
/// with `garbage`.
async fn garbage_server(garbage: &'static [u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
        let _ = s.write_all(garbage).await;
        // Keep the socket open: the client must close on the garbage, not on EOF.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    (dir, format!("unix:{}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_server_closes_the_connection_with_a_clear_error() {
    for (garbage, want) in [
        (
            &b"HTTP/1.1 400 Bad Request\r\n\r\n"[..],
            "expected '{' or '['",
        ),
        (
            &b"{\"id\": 1, \"result\": [1,,2], \"error\": null}"[..],
            "invalid JSON",
        ),
        (&b"[1, 2, 3]"[..], "must be an object"),
        (
            &b"{\"id\": 1, \"result\": [\xff\xfe], \"error\": null}"[..],
            "invalid JSON",
        ),
    ] {
        let (_dir, remote) = garbage_server(garbage).await;
        let (conn, _notes) = connect(&remote).await;
        let err = tokio::time::timeout(Duration::from_secs(5), conn.call("list_dbs", json!([])))
            .await
            .expect("the call must fail, not hang")
            .unwrap_err();
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
        let reason: Arc<Error> = conn.closed().await;
        let text = ycloud_ovsdb_error_chain(&*reason);
        assert!(
            text.contains(want) && text.contains(&remote),
            "{want}: {text}"
        );
        assert!(conn.is_closed());
    }
}

fn ycloud_ovsdb_error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_fails_the_pending_call_as_retriable() {
    let mut server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    let (conn, _notes) = connect(&server.tcp_remote()).await;
    let wait = json!(["OVN_Northbound", {"op": "wait", "table": "Logical_Switch", "timeout": 60000,
        "where": [["name", "==", "never"]], "columns": ["name"], "until": "==",
        "rows": [{"name": "never"}]}]);
    let call = tokio::spawn({
        let conn = conn.clone();
        async move { conn.call("transact", wait).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill();
    let err = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_survives_the_servers_inactivity_probe_because_the_reader_answers_echo()
{
    let server = OvsdbServer::start(SchemaFile::Nb).unwrap();
    // Our own probe off: only the server's echo (every 5 s, drop after 10 s unanswered) runs.
    let (tx, _notes) = mpsc::unbounded_channel();
    let remote: Remote = server.tcp_remote().parse().unwrap();
    let opts = ConnectionOptions {
        probe_interval: None,
        ..Default::default()
    };
    let conn = Connection::connect(&remote, None, opts, tx).await.unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(!conn.is_closed());
    assert_eq!(
        conn.call("echo", json!(["still here"])).await.unwrap(),
        json!(["still here"])
    );
}
