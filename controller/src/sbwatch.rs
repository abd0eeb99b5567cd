//! The controller's read-only watch of OVN_Southbound (`--ovn-sb`): which chassis OVN
//! elected for a gateway port.
//!
//! Why SB: OVN decides by BFD between the chassis which gateway chassis is alive and puts
//! the winner of each distributed gateway port in `Port_Binding(cr-<port>).chassis`. The
//! service gateway is a gateway router (its SNAT recipe works only there on OVN 23.03),
//! which OVN never moves by itself; the controller reads the election of its beacon port
//! (`compiler::gateways::service_gateway_rows_ha`) here and re-pins the router to it.
//!
//! What is watched, and nothing more: `Port_Binding` rows of type `chassisredirect`
//! (columns `logical_port`, `chassis`; the type is a monitor condition, so the server sends
//! only those rows) and `Chassis.name`. Nothing is ever written to SB. The client resumes
//! the monitor after a reconnect; while SB is unreachable the last election stays in force
//! (the service gateway stays where it is).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use ycloud_ovsdb::cache::{Cache, CacheError, Snapshot};
use ycloud_ovsdb::client::{MonitorRequests, TableMonitor};
use ycloud_ovsdb::models::sb;
use ycloud_ovsdb::schema::DatabaseSchema;
use ycloud_ovsdb::transport::TlsConfig;
use ycloud_ovsdb::{Client, ClientConfig};

/// The SB database name.
pub const SB_DB: &str = "OVN_Southbound";
const PORT_BINDING: &str = "Port_Binding";
const CHASSIS: &str = "Chassis";

/// Why the watch can't run with this SB server (it retries).
#[derive(Debug, thiserror::Error)]
pub enum SbError {
    #[error("SB client configuration")]
    Config(#[source] ycloud_ovsdb::Error),
    #[error("connecting to SB")]
    Connect(#[source] ycloud_ovsdb::Error),
    #[error("reading the OVN_Southbound schema")]
    Schema(#[source] ycloud_ovsdb::Error),
    #[error("the SB server's schema lacks what the watch reads: {0}")]
    Compat(String),
    #[error("building the SB cache")]
    Cache(#[source] CacheError),
    #[error("monitoring SB")]
    Monitor(#[source] ycloud_ovsdb::Error),
}

/// The tables and columns the cache holds.
fn watched() -> BTreeMap<String, Option<Vec<String>>> {
    BTreeMap::from([
        (
            PORT_BINDING.to_owned(),
            Some(vec!["logical_port".to_owned(), "chassis".to_owned()]),
        ),
        (CHASSIS.to_owned(), Some(vec!["name".to_owned()])),
    ])
}

/// A cache of what the watch reads, for `schema` (the server's, or [`sb::schema`]).
pub fn cache(schema: Arc<DatabaseSchema>) -> Result<Cache, CacheError> {
    Cache::new(schema, watched())
}

/// The monitor request: the cache's columns, and only `chassisredirect` port bindings.
pub fn monitor_requests() -> MonitorRequests {
    watched()
        .into_iter()
        .map(|(table, columns)| {
            let where_ = (table == PORT_BINDING)
                .then(|| serde_json::json!([["type", "==", "chassisredirect"]]));
            (table, TableMonitor { columns, where_ })
        })
        .collect()
}

/// The name of the chassis holding SB port `logical_port` (e.g. `cr-yc-svcgw-beacon-gw`);
/// `None` when no chassis claimed it (or the port or chassis is not known yet).
pub fn active_chassis(snap: &Snapshot, logical_port: &str) -> Option<String> {
    let (_, pb) = snap.rows(PORT_BINDING).find(|(_, r)| {
        r.get("logical_port")
            .and_then(|v| v.as_atom())
            .and_then(|a| a.as_str())
            == Some(logical_port)
    })?;
    let chassis = pb.get("chassis")?.as_atom()?.as_uuid()?;
    let row = snap.get(CHASSIS, &chassis)?;
    Some(row.get("name")?.as_atom()?.as_str()?.to_owned())
}

/// Connects, checks the schema and starts the monitor into a fresh cache.
pub async fn connect(
    remotes: &[String],
    tls: Option<TlsConfig>,
) -> Result<(Client, Cache), SbError> {
    let mut config = ClientConfig::new(remotes.to_vec(), SB_DB);
    config.tls = tls;
    let (client, _events) = Client::connect(config).await.map_err(|e| match e {
        e @ (ycloud_ovsdb::Error::InvalidRemote { .. } | ycloud_ovsdb::Error::TlsConfig { .. }) => {
            SbError::Config(e)
        }
        e => SbError::Connect(e),
    })?;
    let schema = client.get_schema(SB_DB).await.map_err(SbError::Schema)?;
    sb::check_compat(&schema, Some(&[PORT_BINDING, CHASSIS]))
        .map_err(|r| SbError::Compat(r.to_string()))?;
    let cache = cache(Arc::new(schema)).map_err(SbError::Cache)?;
    client
        .monitor(monitor_requests(), Arc::new(cache.clone()))
        .await
        .map_err(SbError::Monitor)?;
    Ok((client, cache))
}

/// How long the first holder of the beacon must keep it before the controller follows it.
pub const SETTLE: Duration = Duration::from_secs(3);

/// Watches which chassis holds SB port `logical_port`, in a task of its own: the receiver
/// sees every change of the chassis' name (`None`: unclaimed, or SB not read yet), the
/// first one once it has held for [`SETTLE`]. A
/// misconfigured remote is logged and never retried; an unreachable SB is retried every
/// second.
pub fn spawn(
    remotes: Vec<String>,
    tls: Option<TlsConfig>,
    logical_port: String,
) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let (client, cache) = loop {
            match connect(&remotes, tls.clone()).await {
                Ok(c) => break c,
                Err(e @ SbError::Config(_)) => {
                    tracing::error!(error = %error_chain(&e), ?remotes, "SB watch off: bad --ovn-sb");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), ?remotes, "SB not watched yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        tracing::info!(?remotes, port = %logical_port, "watching SB");
        let mut changes = cache.subscribe();
        // The first holder counts only once it has held the port for `SETTLE`: at start a
        // standby can claim it before its BFD sessions are up and give it back a few hundred
        // ms later (seen: node 2 for 0.14–0.36 s, then node 1 again). Following that moves
        // `yc-svcgw` away and back within 0.5 s: two needless outages of every cross-VPC
        // flow. (The 30 s drop seen in those runs was another fault, the LB on the beacon:
        // `plan::lb_target`.) Later moves (a failover) count at once.
        let mut holder = active_chassis(&cache.snapshot(), &logical_port);
        let mut since = tokio::time::Instant::now();
        loop {
            match tokio::time::timeout_at(since + SETTLE, changes.recv()).await {
                Err(_held) => break,
                Ok(None) => {
                    client.close();
                    return;
                }
                Ok(Some(_)) => {
                    while changes.try_recv().is_ok() {}
                    let now = active_chassis(&cache.snapshot(), &logical_port);
                    if now != holder {
                        tracing::debug!(port = %logical_port, from = ?holder, to = ?now, "SB: holder changed while settling");
                        holder = now;
                        since = tokio::time::Instant::now();
                    }
                }
            }
        }
        loop {
            let now = active_chassis(&cache.snapshot(), &logical_port);
            tx.send_if_modified(|v| {
                let changed = *v != now;
                if changed {
                    tracing::info!(port = %logical_port, from = ?v, to = ?now, "SB: gateway chassis elected");
                    *v = now;
                }
                changed
            });
            // A burst of changes is one look.
            if changes.recv().await.is_none() {
                break;
            }
            while changes.try_recv().is_ok() {}
            if tx.is_closed() {
                break;
            }
        }
        client.close();
    });
    rx
}

/// Every claimed `chassisredirect` port in SB: logical port → the holder's chassis name.
pub fn holders(snap: &Snapshot) -> BTreeMap<String, String> {
    snap.rows(PORT_BINDING)
        .filter_map(|(_, pb)| {
            let port = pb.get("logical_port")?.as_atom()?.as_str()?.to_owned();
            let chassis = pb.get("chassis")?.as_atom()?.as_uuid()?;
            let name = snap
                .get(CHASSIS, &chassis)?
                .get("name")?
                .as_atom()?
                .as_str()?;
            Some((port, name.to_owned()))
        })
        .collect()
}

/// A port's holder and since when the watch has seen it hold the port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub chassis: String,
    /// When the watch first saw this chassis hold the port: a claim present when the watch
    /// began counts from then, so a start-up claim has to hold [`SETTLE`] like any other.
    pub since: tokio::time::Instant,
}

/// Watches who holds every gateway port (`chassisredirect` binding) in SB, for the
/// demotion of failed gateway chassis (`crate::demotions`), in a task of its own on a
/// connection of its own: the receiver sees the map port → [`Held`] after every change
/// (an unclaimed port is absent). The same retries as [`spawn`].
pub fn spawn_holders(
    remotes: Vec<String>,
    tls: Option<TlsConfig>,
) -> watch::Receiver<BTreeMap<String, Held>> {
    let (tx, rx) = watch::channel(BTreeMap::<String, Held>::new());
    tokio::spawn(async move {
        let (client, cache) = loop {
            match connect(&remotes, tls.clone()).await {
                Ok(c) => break c,
                Err(e @ SbError::Config(_)) => {
                    tracing::error!(error = %error_chain(&e), ?remotes, "SB holder watch off: bad --ovn-sb");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), ?remotes, "SB holders not watched yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut changes = cache.subscribe();
        loop {
            let now = tokio::time::Instant::now();
            let seen = holders(&cache.snapshot());
            tx.send_if_modified(|held| {
                let next: BTreeMap<String, Held> = seen
                    .into_iter()
                    .map(|(port, chassis)| {
                        let since = match held.get(&port) {
                            Some(h) if h.chassis == chassis => h.since,
                            _ => now,
                        };
                        (port, Held { chassis, since })
                    })
                    .collect();
                let changed = *held != next;
                *held = next;
                changed
            });
            // A burst of changes is one look.
            if changes.recv().await.is_none() {
                break;
            }
            while changes.try_recv().is_ok() {}
            if tx.is_closed() {
                break;
            }
        }
        client.close();
    });
    rx
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s = format!("{s}: {c}");
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use ycloud_ovsdb::cache::UpdateKind;

    use super::*;

    const PB: &str = "6b2a3e5c-0000-4000-8000-0000000000b1";
    const N1: &str = "6b2a3e5c-0000-4000-8000-0000000000c1";
    const N2: &str = "6b2a3e5c-0000-4000-8000-0000000000c2";

    fn sb_cache() -> Cache {
        let c = cache(Arc::new(sb::schema().clone())).expect("cache");
        c.apply(
            UpdateKind::Update2,
            &serde_json::json!({
                "Chassis": {
                    N1: {"initial": {"name": "node-1"}},
                    N2: {"initial": {"name": "node-2"}},
                },
                "Port_Binding": {
                    PB: {"initial": {"logical_port": "cr-beacon", "chassis": ["set", []]}},
                },
            }),
        )
        .expect("apply");
        c
    }

    /// The port binding as SB would send it claimed by `chassis` (`""`: unclaimed).
    fn claim(c: &Cache, chassis: &str) {
        let v = if chassis.is_empty() {
            serde_json::json!(["set", []])
        } else {
            serde_json::json!(["uuid", chassis])
        };
        c.apply(
            UpdateKind::Update2,
            &serde_json::json!({"Port_Binding": {PB: {"delete": null}}}),
        )
        .expect("delete");
        c.apply(
            UpdateKind::Update2,
            &serde_json::json!({"Port_Binding": {PB: {"insert": {"logical_port": "cr-beacon", "chassis": v}}}}),
        )
        .expect("insert");
    }

    #[test]
    fn the_elected_chassis_is_the_name_of_the_chassis_holding_the_port_and_none_while_unclaimed() {
        let c = sb_cache();
        assert_eq!(active_chassis(&c.snapshot(), "cr-beacon"), None);
        claim(&c, N2);
        assert_eq!(
            active_chassis(&c.snapshot(), "cr-beacon").as_deref(),
            Some("node-2")
        );
        assert_eq!(active_chassis(&c.snapshot(), "cr-other"), None);
        claim(&c, "");
        assert_eq!(active_chassis(&c.snapshot(), "cr-beacon"), None);
        claim(&c, N1);
        assert_eq!(
            active_chassis(&c.snapshot(), "cr-beacon").as_deref(),
            Some("node-1")
        );
    }

    #[test]
    fn only_chassisredirect_bindings_are_requested_with_the_columns_the_cache_holds() {
        let r = monitor_requests();
        assert_eq!(
            r[PORT_BINDING].where_,
            Some(serde_json::json!([["type", "==", "chassisredirect"]]))
        );
        assert_eq!(
            r[PORT_BINDING].columns.as_deref(),
            Some(&["logical_port".to_owned(), "chassis".to_owned()][..])
        );
        assert_eq!(r[CHASSIS].where_, None);
        assert_eq!(r.len(), 2);
    }
}
