//! `ycloudctl`'s logic, as a library so tests drive it without parsing a terminal:
//!
//! - [`status`]: services, addresses, backends ready/total and conditions, from the status
//!   files the controller writes in manifest mode, or (feature `kube`, `status_api`) from
//!   the `.status` of the `YusurService` objects in the API server;
//! - [`trace`]: a client packet to a service VIP through `ovn-trace` on the live SB, told in
//!   words (which load balancer, which backend, which NAT, or where it dies);
//! - [`nb_rows`]: the NB rows a service owns (by its ownership keys);
//! - the offload checker is [`crate::offload`].
//!
//! Every command reads; none writes to OVN. Errors name what could not be reached or found.

pub mod nb_rows;
pub mod status;
#[cfg(feature = "kube")]
pub mod status_api;
pub mod trace;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use ycloud_ovsdb::{Client, ClientConfig};

/// Why a `ycloudctl` command could not do its job (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error("connecting to {db} at {remote}")]
    Connect {
        db: &'static str,
        remote: String,
        #[source]
        source: Box<ycloud_ovsdb::Error>,
    },
    #[error("{db} at {remote} did not answer within {timeout:?}")]
    Timeout {
        db: &'static str,
        remote: String,
        timeout: Duration,
    },
    #[error("{what} on {remote}")]
    Query {
        what: String,
        remote: String,
        #[source]
        source: Box<ycloud_ovsdb::Error>,
    },
    #[error("unexpected reply from {remote}: {detail}")]
    Reply { remote: String, detail: String },
    #[error("{0}")]
    NotFound(String),
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
    #[error("running `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Tool {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {timeout:?}")]
    ToolTimeout { command: String, timeout: Duration },
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("no Kubernetes API configuration: {0}")]
    KubeConfig(String),
    #[error("the API server {server} did not answer within {timeout:?}")]
    ApiTimeout { server: String, timeout: Duration },
    #[cfg(feature = "kube")]
    #[error("{what} on the API server {server}")]
    Kube {
        what: String,
        server: String,
        #[source]
        source: Box<kube::Error>,
    },
}

pub(crate) const NB: &str = "OVN_Northbound";

/// Runs `f` on a current-thread runtime, bounded by `timeout` (a dead remote must not hang a
/// command-line tool).
pub(crate) fn block_on<T>(
    remote: &str,
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, CtlError>>,
) -> Result<T, CtlError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CtlError::Runtime)?;
    rt.block_on(async {
        tokio::time::timeout(timeout, f)
            .await
            .map_err(|_| CtlError::Timeout {
                db: NB,
                remote: remote.to_string(),
                timeout,
            })?
    })
}

/// Connects to NB (`remote` may be a comma-separated RAFT member list).
pub(crate) async fn connect_nb(remote: &str, timeout: Duration) -> Result<Client, CtlError> {
    let mut config = ClientConfig::new(remote.split(',').map(str::to_owned).collect(), NB);
    config.request_timeout = timeout;
    let (client, _events) = Client::connect(config)
        .await
        .map_err(|source| CtlError::Connect {
            db: NB,
            remote: remote.to_string(),
            source: Box::new(source),
        })?;
    Ok(client)
}

/// One transaction of `select`s (`(table, where)`), so the rows are one consistent snapshot;
/// the rows of each select, in order.
pub(crate) async fn select(
    client: &Client,
    remote: &str,
    selects: &[(&str, Value)],
) -> Result<Vec<Vec<Value>>, CtlError> {
    let mut params = vec![json!(NB)];
    params.extend(
        selects
            .iter()
            .map(|(t, w)| json!({"op": "select", "table": t, "where": w})),
    );
    let reply = client
        .call("transact", Value::Array(params))
        .await
        .map_err(|source| CtlError::Query {
            what: "select".into(),
            remote: remote.to_string(),
            source: Box::new(source),
        })?;
    let results = reply.as_array().ok_or_else(|| CtlError::Reply {
        remote: remote.to_string(),
        detail: format!("transact reply is not an array: {reply}"),
    })?;
    let mut out = Vec::new();
    for ((table, _), result) in selects.iter().zip(results) {
        if let Some(err) = result.get("error") {
            return Err(CtlError::Reply {
                remote: remote.to_string(),
                detail: format!("select on {table}: {err} {}", result["details"]),
            });
        }
        out.push(result["rows"].as_array().cloned().unwrap_or_default());
    }
    Ok(out)
}

/// OVSDB wire values as `ovn-nbctl list` shows them.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() == 2 && (a[0] == "uuid" || a[0] == "named-uuid") => show(&a[1]),
        Value::Array(a) if a.len() == 2 && a[0] == "set" => format!(
            "[{}]",
            a[1].as_array()
                .map(|x| x.iter().map(show).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        ),
        Value::Array(a) if a.len() == 2 && a[0] == "map" => format!(
            "{{{}}}",
            a[1].as_array()
                .map(|x| {
                    x.iter()
                        .map(|kv| format!("{}={}", show(&kv[0]), show(&kv[1])))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

/// The members of an OVSDB set value (a single atom is a set of one).
pub(crate) fn set_items(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) if a.len() == 2 && a[0] == "set" => {
            a[1].as_array().cloned().unwrap_or_default()
        }
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// The `(key, value)` pairs of an OVSDB map value, as strings.
pub(crate) fn map_items(v: &Value) -> Vec<(String, String)> {
    match v {
        Value::Array(a) if a.len() == 2 && a[0] == "map" => a[1]
            .as_array()
            .map(|x| x.iter().map(|kv| (show(&kv[0]), show(&kv[1]))).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A map value's entry.
pub(crate) fn map_get(v: &Value, key: &str) -> Option<String> {
    map_items(v)
        .into_iter()
        .find_map(|(k, val)| (k == key).then_some(val))
}

/// A row's `_uuid` as a string.
pub(crate) fn uuid_of(row: &Value) -> String {
    show(&row["_uuid"])
}

/// The uuids a set-of-references column holds.
pub(crate) fn refs(v: &Value) -> Vec<String> {
    set_items(v).iter().map(show).collect()
}
