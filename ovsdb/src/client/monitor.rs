//! Monitors: what to watch, the targets they feed, creating one with fallback to older
//! methods, and applying its reply.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::Inner;
use crate::codec::{RawJson, excerpt_str};
use crate::error::Error;
use crate::rpc::{Connection, error_chain};

/// Which monitor flavour a server accepted (newest first; we fall back on `unknown method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorMethod {
    /// `monitor_cond_since`, notifications `update3` with a transaction id.
    CondSince,
    /// `monitor_cond`, notifications `update2`.
    Cond,
    /// `monitor` (RFC 7047), notifications `update` with old/new rows, no conditions.
    Plain,
}

/// The format of a table-updates object passed to a [`MonitorTarget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateFormat {
    /// RFC 7047 `<table-updates>`: rows with `old` / `new`.
    V1,
    /// `<table-updates2>`: `initial` / `insert` / `delete` / `modify` (a diff).
    V2,
}

/// What a monitor feeds. Called in the connection's reader task: must not block.
pub trait MonitorTarget: Send + Sync + 'static {
    fn apply(&self, format: UpdateFormat, table_updates: &Value) -> Result<(), String>;
    /// Like [`MonitorTarget::apply`], taking the updates by value (the initial monitor
    /// reply): a target that can consume them frees the JSON tree as it reads it, instead
    /// of holding the tree and its own copy at once.
    fn apply_owned(&self, format: UpdateFormat, table_updates: Value) -> Result<(), String> {
        self.apply(format, &table_updates)
    }
    /// Like [`MonitorTarget::apply`], taking the JSON text of the table-updates as received
    /// (the client hands over monitor replies and update notifications this way). A target
    /// that can read text directly never builds a `serde_json::Value` tree; the default
    /// parses the text and calls [`MonitorTarget::apply_owned`].
    fn apply_str(&self, format: UpdateFormat, table_updates: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(table_updates)
            .map_err(|e| format!("invalid table-updates JSON: {e}"))?;
        self.apply_owned(format, v)
    }
    /// Forget everything (before a full reload).
    fn clear(&self);
    fn set_last_txn_id(&self, id: Option<String>);
    fn last_txn_id(&self) -> Option<String>;
}

/// The monitor cache (H3's [`crate::cache::Cache`]) is the usual target.
impl MonitorTarget for crate::cache::Cache {
    fn apply(&self, format: UpdateFormat, table_updates: &Value) -> Result<(), String> {
        let kind = match format {
            UpdateFormat::V1 => crate::cache::UpdateKind::Update,
            UpdateFormat::V2 => crate::cache::UpdateKind::Update2,
        };
        crate::cache::Cache::apply(self, kind, table_updates).map_err(|e| error_chain(&e))
    }

    fn apply_owned(&self, format: UpdateFormat, table_updates: Value) -> Result<(), String> {
        let kind = match format {
            UpdateFormat::V1 => crate::cache::UpdateKind::Update,
            UpdateFormat::V2 => crate::cache::UpdateKind::Update2,
        };
        crate::cache::Cache::apply_owned(self, kind, table_updates).map_err(|e| error_chain(&e))
    }

    fn apply_str(&self, format: UpdateFormat, table_updates: &str) -> Result<(), String> {
        let kind = match format {
            UpdateFormat::V1 => crate::cache::UpdateKind::Update,
            UpdateFormat::V2 => crate::cache::UpdateKind::Update2,
        };
        crate::cache::Cache::apply_str(self, kind, table_updates).map_err(|e| error_chain(&e))
    }

    fn clear(&self) {
        crate::cache::Cache::clear(self)
    }

    fn set_last_txn_id(&self, id: Option<String>) {
        crate::cache::Cache::set_last_txn_id(self, id)
    }

    fn last_txn_id(&self) -> Option<String> {
        crate::cache::Cache::last_txn_id(self)
    }
}

/// What to monitor in one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableMonitor {
    /// `None`: all columns.
    pub columns: Option<Vec<String>>,
    /// RFC 7047bis conditions (`[["name","==","x"], …]` or `[true]`); `None`: all rows.
    /// Ignored by servers that only speak plain `monitor`.
    pub where_: Option<Value>,
}

/// Table name → what to monitor there.
pub type MonitorRequests = BTreeMap<String, TableMonitor>;

pub(super) fn requests_json(reqs: &MonitorRequests, method: MonitorMethod) -> Value {
    let mut m = serde_json::Map::new();
    for (table, t) in reqs {
        let mut o = serde_json::Map::new();
        if let Some(c) = &t.columns {
            o.insert("columns".into(), json!(c));
        }
        if method != MonitorMethod::Plain
            && let Some(w) = &t.where_
        {
            o.insert("where".into(), w.clone());
        }
        let v = Value::Object(o);
        m.insert(
            table.clone(),
            if method == MonitorMethod::Plain {
                v
            } else {
                json!([v])
            },
        );
    }
    Value::Object(m)
}

pub(super) struct MonitorState {
    pub(super) id: Value,
    pub(super) db: String,
    pub(super) requests: Mutex<MonitorRequests>,
    pub(super) target: Arc<dyn MonitorTarget>,
    pub(super) method: Mutex<MonitorMethod>,
    /// Serial of the connection this monitor was last created on: `Client::monitor` and a
    /// reconnect can race to create it, and the server refuses a duplicate monitor id.
    pub(super) started_on: Mutex<u64>,
    /// A `monitor_cond_change` was sent and its reply not seen yet: the rows its new
    /// conditions add may not be in the target. A resume (`monitor_cond_since` with the last
    /// transaction id) only sends what changed since, never rows that were there already but
    /// excluded, so until the reply the next re-creation reloads everything.
    pub(super) changing: std::sync::atomic::AtomicBool,
}

/// A monitor created by [`Client::monitor`]; it keeps feeding its target until cancelled.
#[derive(Debug, Clone)]
pub struct MonitorHandle {
    pub id: String,
    pub method: MonitorMethod,
}

/// Creates (or re-creates after a reconnect) one monitor on `conn`, falling back from
/// `monitor_cond_since` to `monitor_cond` to `monitor` on `unknown method`. The reply is
/// applied inside the reader task so later updates land on top of it.
pub(super) async fn start_monitor(
    inner: &Inner,
    conn: &Connection,
    state: &Arc<MonitorState>,
) -> Result<MonitorMethod, Error> {
    {
        let mut started = state.started_on.lock().unwrap_or_else(|e| e.into_inner());
        if *started == conn.serial() {
            return Ok(*state.method.lock().unwrap_or_else(|e| e.into_inner()));
        }
        *started = conn.serial();
    }
    let mut method = *state.method.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let requests = state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let reqs = requests_json(&requests, method);
        let last = if state.changing.load(Ordering::Acquire) {
            None
        } else {
            state.target.last_txn_id()
        };
        let (name, params) = match method {
            MonitorMethod::CondSince => (
                "monitor_cond_since",
                json!([
                    state.db,
                    state.id,
                    reqs,
                    last.clone().unwrap_or_else(|| Uuid::nil().to_string())
                ]),
            ),
            MonitorMethod::Cond => ("monitor_cond", json!([state.db, state.id, reqs])),
            MonitorMethod::Plain => ("monitor", json!([state.db, state.id, reqs])),
        };
        let (tx, rx) = oneshot::channel();
        let st = state.clone();
        let had_last = last.is_some();
        conn.send_request_raw(
            name,
            params,
            Box::new(move |r| {
                let out = r.and_then(|v| apply_monitor_reply(&st, method, had_last, v));
                let _ = tx.send(out);
            }),
        )?;
        let outcome = rx.await.unwrap_or_else(|_| {
            Err(Error::Disconnected {
                reason: "reply handler dropped".into(),
                retriable: true,
            })
        });
        match outcome {
            Ok(resumed) => {
                *state.method.lock().unwrap_or_else(|e| e.into_inner()) = method;
                if !resumed {
                    // Reloaded with the current conditions: nothing is missing any more.
                    state.changing.store(false, Ordering::Release);
                }
                let counter = if resumed {
                    &inner.stats.resumed_monitors
                } else {
                    &inner.stats.reloaded_monitors
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return Ok(method);
            }
            Err(Error::Rpc { error, .. })
                if error == "unknown method" && method != MonitorMethod::Plain =>
            {
                method = if method == MonitorMethod::CondSince {
                    MonitorMethod::Cond
                } else {
                    MonitorMethod::Plain
                };
            }
            Err(e) => return Err(e),
        }
    }
}

/// Applies a monitor reply to the target; returns whether it was a resume (no reload).
/// The reply comes as text and its table-updates go to [`MonitorTarget::apply_str`]: for a
/// big initial reply, a `serde_json::Value` tree next to the cache would be the peak RSS.
fn apply_monitor_reply(
    st: &MonitorState,
    method: MonitorMethod,
    had_last: bool,
    reply: RawJson,
) -> Result<bool, Error> {
    let bad = |why: String| Error::UnexpectedReply {
        method: format!("{method:?} ({why})"),
        reply: excerpt_str(reply.as_str()),
    };
    let cache_err = |e: String| Error::Cache(format!("monitor {}: {e}", st.id));
    match method {
        MonitorMethod::CondSince => {
            // [found, last-txn-id, table-updates]
            let parts = reply
                .elements()
                .map_err(|e| bad(format!("not an array: {e}")))?;
            let [found, txn, updates] = <[RawJson; 3]>::try_from(parts)
                .map_err(|p| bad(format!("{} elements, expected 3", p.len())))?;
            let found = found
                .to_value()
                .ok()
                .and_then(|v| v.as_bool())
                .ok_or_else(|| bad("found is not a boolean".into()))?;
            let txn = txn
                .to_value()
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            let resumed = found && had_last;
            if !resumed {
                st.target.clear();
            }
            st.target
                .apply_str(UpdateFormat::V2, updates.as_str())
                .map_err(cache_err)?;
            st.target.set_last_txn_id(txn);
            Ok(resumed)
        }
        MonitorMethod::Cond | MonitorMethod::Plain => {
            st.target.clear();
            let fmt = if method == MonitorMethod::Cond {
                UpdateFormat::V2
            } else {
                UpdateFormat::V1
            };
            st.target
                .apply_str(fmt, reply.as_str())
                .map_err(cache_err)?;
            st.target.set_last_txn_id(None);
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_requests_use_arrays_for_cond_and_drop_conditions_for_plain_monitor() {
        let mut reqs = MonitorRequests::new();
        reqs.insert(
            "Logical_Switch".into(),
            TableMonitor {
                columns: Some(vec!["name".into()]),
                where_: Some(json!([["name", "==", "a"]])),
            },
        );
        assert_eq!(
            requests_json(&reqs, MonitorMethod::CondSince),
            json!({"Logical_Switch": [{"columns": ["name"], "where": [["name", "==", "a"]]}]})
        );
        assert_eq!(
            requests_json(&reqs, MonitorMethod::Plain),
            json!({"Logical_Switch": {"columns": ["name"]}})
        );
    }
}
