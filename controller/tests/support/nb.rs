//! A real OVN_Northbound `ovsdb-server` with our client and its cache monitoring it: the
//! ground of the compiler's real-NB tests. Each test file adds what it plans and reads as
//! an `impl Nb` block of its own (the fields are public for that).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ycloud_controller::compiler::nb;
use ycloud_ovsdb::cache::Cache;
use ycloud_ovsdb::{Client, ClientConfig};
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

pub struct Nb {
    pub server: OvsdbServer,
    pub client: Client,
    pub cache: Cache,
}

impl Nb {
    /// An empty NB (no NB_Global row either), our client connected and its cache loaded.
    pub async fn start() -> Nb {
        let server = OvsdbServer::start(SchemaFile::Nb).expect("start NB ovsdb-server");
        let (client, _events) = Client::connect(ClientConfig::new(
            vec![server.unix_remote()],
            "OVN_Northbound",
        ))
        .await
        .expect("connect");
        let schema = Arc::new(client.get_schema("OVN_Northbound").await.expect("schema"));
        let cache = nb::cache(schema).expect("cache");
        client.monitor_cache(&cache).await.expect("monitor");
        Nb {
            server,
            client,
            cache,
        }
    }

    /// `ovn-nbctl ARGS` against this NB (an operator's edits, and reads that do not go
    /// through our client); panics with its stderr when it fails.
    pub fn nbctl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("ovn-nbctl")
            .arg(format!("--db={}", self.server.unix_remote()))
            .args(["--no-leader-only", "--timeout=10"])
            .args(args)
            .output()
            .expect("run ovn-nbctl");
        assert!(
            out.status.success(),
            "ovn-nbctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits until the cache has seen a change made behind our back (by `ovn-nbctl`): the
    /// update is sent before the echo's reply.
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.client.echo(serde_json::json!([])).await.expect("echo");
    }
}
