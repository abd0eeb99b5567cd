//! The OVSDB client: a supervisor task keeps one connection to a usable server (reconnecting
//! with exponential backoff and jitter, RAFT leader only if asked), resumes monitors after a
//! reconnect, and exposes the RPCs.
//!
//! Guarantees (see docs/ovsdb.md):
//! - Wire order: monitor replies and updates are applied to their target inside the
//!   connection's reader task, in the order the server sent them, so when `transact` returns
//!   the monitored cache already contains the transaction's effect.
//! - No silent resend: a request in flight when the connection drops fails with
//!   [`Error::Disconnected`] `{retriable: true}`; the client never sends it again.
//! - Resume: after a reconnect each monitor is re-created with `monitor_cond_since` and the
//!   last transaction id seen; when the server says `found: true` only the missed changes are
//!   applied, otherwise the target is cleared and reloaded.
//! - Leader only: with `leader_only`, a member of a clustered database is used only while the
//!   `_Server` database says it is the leader and connected, and never if its log index is
//!   behind one we have already seen.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::codec::{DEFAULT_MAX_MESSAGE, RawJson};
use crate::error::Error;
use crate::ops::{Operation, OperationResult, TransactParams, TransactResult};
use crate::rpc::{Connection, ConnectionOptions, Notification, NotificationSink, error_chain};
use crate::transport::{Remote, TlsConfig};

mod backoff;
mod leader;
mod monitor;

pub use backoff::Backoff;
use leader::{SERVER_MONITOR_ID, ServerWatch};
pub use monitor::{
    MonitorHandle, MonitorMethod, MonitorRequests, MonitorTarget, TableMonitor, UpdateFormat,
};
use monitor::{MonitorState, requests_json, start_monitor};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// One or more remotes (`unix:`, `tcp:`, `ssl:`); for a RAFT cluster, every member.
    pub remotes: Vec<String>,
    /// Required when a remote is `ssl:`.
    pub tls: Option<TlsConfig>,
    /// The database this client transacts on and monitors, e.g. `OVN_Northbound`.
    pub db: String,
    /// Use only the RAFT leader of a clustered database.
    pub leader_only: bool,
    /// Our inactivity probe (see [`ConnectionOptions::probe_interval`]).
    pub probe_interval: Option<Duration>,
    pub backoff: Backoff,
    /// How long a request waits for a usable connection before failing with
    /// [`Error::NotConnected`].
    pub request_timeout: Duration,
    pub max_message: usize,
    /// Check every transaction against the server's schema (fetched at each connect) before
    /// sending it; errors name the table, column and value.
    pub validate: bool,
    /// Refuse a server whose schema does not fit our typed models (checked at every
    /// connect; the reason lists every mismatch).
    pub models: Option<ModelCheck>,
}

/// The models a client is written against: `ours` is the schema they were generated from
/// (e.g. `ycloud_ovsdb::models::nb::schema()`), `tables` the ones the caller uses (`None`:
/// all of them).
#[derive(Debug, Clone)]
pub struct ModelCheck {
    pub ours: &'static crate::schema::DatabaseSchema,
    pub tables: Option<Vec<String>>,
}

impl ClientConfig {
    pub fn new(remotes: Vec<String>, db: impl Into<String>) -> Self {
        ClientConfig {
            remotes,
            tls: None,
            db: db.into(),
            leader_only: false,
            probe_interval: Some(Duration::from_secs(5)),
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(30),
            max_message: DEFAULT_MAX_MESSAGE,
            validate: true,
            models: None,
        }
    }
}

/// Something that happened to the client, for callers that care (locks, connectivity).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Connected {
        remote: String,
    },
    Disconnected {
        reason: String,
    },
    /// A `lock` we asked for was granted.
    Locked {
        lock: String,
    },
    /// Another client stole a lock we held.
    Stolen {
        lock: String,
    },
    /// A monitor update could not be applied; the connection is reset so it reloads.
    MonitorError {
        monitor: String,
        error: String,
    },
}

enum Control {
    Reconnect(String),
}

struct Inner {
    config: ClientConfig,
    remotes: Vec<Remote>,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: watch::Sender<Option<Connection>>,
    monitors: Mutex<HashMap<String, Arc<MonitorState>>>,
    next_monitor: AtomicU64,
    events: mpsc::UnboundedSender<Event>,
    control: mpsc::UnboundedSender<Control>,
    /// Highest RAFT log index seen for our database on any member: a member behind it is
    /// stale (it would serve us old data) and is refused.
    max_index: AtomicU64,
    /// Counters for tests and metrics.
    stats: Stats,
    /// Why the last round of connection attempts failed, one line per remote.
    last_errors: Mutex<Vec<String>>,
    /// The schema of `config.db` as served by the current (or last) server.
    schema: Mutex<Option<Arc<crate::schema::DatabaseSchema>>>,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub connects: AtomicU64,
    pub resumed_monitors: AtomicU64,
    pub reloaded_monitors: AtomicU64,
}

impl Inner {
    fn lock_monitors(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<MonitorState>>> {
        self.monitors.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle to an OVSDB client. Cheap to clone; the supervisor task stops when
/// [`Client::close`] is called or the last handle is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    guard: Arc<CloseGuard>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("remotes", &self.inner.config.remotes)
            .finish()
    }
}

struct CloseGuard {
    stop: watch::Sender<bool>,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl Client {
    /// Starts the client and waits (up to `request_timeout`) for the first usable connection.
    /// Fails at once on configuration errors (bad remote, unreadable TLS files).
    pub async fn connect(
        config: ClientConfig,
    ) -> Result<(Client, mpsc::UnboundedReceiver<Event>), Error> {
        if config.remotes.is_empty() {
            return Err(Error::InvalidRemote {
                remote: String::new(),
                reason: "no remotes given".into(),
            });
        }
        let remotes = config
            .remotes
            .iter()
            .map(|r| r.parse())
            .collect::<Result<Vec<Remote>, _>>()?;
        let tls = match &config.tls {
            Some(t) => Some(t.client_config()?),
            None => None,
        };
        let (events, events_rx) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::unbounded_channel();
        let (conn, _) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            remotes,
            tls,
            conn,
            monitors: Mutex::new(HashMap::new()),
            next_monitor: AtomicU64::new(1),
            events,
            control,
            max_index: AtomicU64::new(0),
            stats: Stats::default(),
            schema: Mutex::new(None),
            last_errors: Mutex::new(Vec::new()),
        });
        tokio::spawn(supervise(Arc::downgrade(&inner), control_rx, stop_rx));
        let client = Client {
            inner,
            guard: Arc::new(CloseGuard { stop }),
        };
        client.connection().await?;
        Ok((client, events_rx))
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Stops the supervisor and closes the connection.
    pub fn close(&self) {
        self.guard.stop.send_replace(true);
        if let Some(c) = self.inner.conn.borrow().clone() {
            c.close();
        }
    }

    /// The current usable connection, waiting up to `request_timeout` for one.
    pub async fn connection(&self) -> Result<Connection, Error> {
        let mut rx = self.inner.conn.subscribe();
        let wait = async {
            loop {
                if let Some(c) = rx.borrow_and_update().clone()
                    && !c.is_closed()
                {
                    return Ok(c);
                }
                if *self.guard.stop.borrow() {
                    return Err(Error::Closed);
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Closed);
                }
            }
        };
        match tokio::time::timeout(self.inner.config.request_timeout, wait).await {
            Ok(r) => r,
            Err(_) => {
                let last = self
                    .inner
                    .last_errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .join("; ");
                Err(Error::NotConnected {
                    reason: format!(
                        "no usable server among {:?} within {:?}; last attempts: {last}",
                        self.inner.config.remotes, self.inner.config.request_timeout
                    ),
                })
            }
        }
    }

    /// The schema of the configured database as the server reported it at the last connect
    /// (`None` before the first connect). Use it for model compatibility checks.
    pub fn schema(&self) -> Option<Arc<crate::schema::DatabaseSchema>> {
        self.inner
            .schema
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The remote of the current connection, if any.
    pub fn current_remote(&self) -> Option<String> {
        self.inner
            .conn
            .borrow()
            .as_ref()
            .filter(|c| !c.is_closed())
            .map(|c| c.remote().to_owned())
    }

    /// Drops the current connection (the supervisor reconnects). For tests and operators.
    pub fn reconnect(&self) {
        let _ = self
            .inner
            .control
            .send(Control::Reconnect("requested".into()));
    }

    /// A request on the current connection. Dropping the returned future before the reply
    /// sends `cancel` for it; the request is never re-sent on another connection.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, Error> {
        let conn = self.connection().await?;
        call_cancellable(&conn, method, params).await
    }

    pub async fn list_dbs(&self) -> Result<Vec<String>, Error> {
        let v = self.call("list_dbs", json!([])).await?;
        serde_json::from_value(v.clone()).map_err(|_| Error::UnexpectedReply {
            method: "list_dbs".into(),
            reply: v.to_string(),
        })
    }

    /// The schema JSON of `db` as the server has it.
    pub async fn get_schema_json(&self, db: &str) -> Result<Value, Error> {
        self.call("get_schema", json!([db])).await
    }

    /// The parsed schema of `db`.
    pub async fn get_schema(&self, db: &str) -> Result<crate::schema::DatabaseSchema, Error> {
        let v = self.get_schema_json(db).await?;
        crate::schema::DatabaseSchema::from_json(&v).map_err(|e| Error::Schema(error_chain(&e)))
    }

    pub async fn echo(&self, params: Value) -> Result<Value, Error> {
        self.call("echo", params).await
    }

    /// Runs `ops` as one transaction on the configured database. Errors of individual
    /// operations become typed errors (constraint violation, referential integrity, timed
    /// out, not leader, …) with the operation and the server's details; on success the result
    /// maps each insert's `uuid-name` to the UUID the server assigned.
    /// `ops` may be owned operations or references to them (`&Operation`,
    /// `Cow<Operation>`): a caller that keeps its operations need not copy them.
    pub async fn transact<O: std::borrow::Borrow<Operation> + Sync>(
        &self,
        ops: &[O],
    ) -> Result<Transacted, Error> {
        let started = std::time::Instant::now();
        if self.inner.config.validate
            && let Some(schema) = self.schema()
        {
            crate::ops::validate(ops, &schema).map_err(Error::Invalid)?;
        }
        let validated = started.elapsed();
        // Encoded straight from the operations: a cold start's request is ~10 MB of JSON,
        // and a `serde_json::Value` tree of it first cost more than the encoding itself.
        let conn = self.connection().await?;
        let (reply, request_bytes) = call_serialized(
            &conn,
            "transact",
            &TransactParams {
                db: &self.inner.config.db,
                ops,
            },
        )
        .await?;
        tracing::debug!(
            ops = ops.len(),
            validate_us = validated.as_micros() as u64,
            elapsed_us = started.elapsed().as_micros() as u64,
            "transact replied"
        );
        let parsed = TransactResult::from_json(&reply).map_err(|e| Error::UnexpectedReply {
            method: "transact".into(),
            reply: format!("{}: {}", error_chain(&e), crate::jsonrpc::excerpt(&reply)),
        })?;
        if let Some(e) = parsed.first_error(ops) {
            let details = match (&e.op, &e.details) {
                (Some(op), Some(d)) => Some(format!("operation {} ({op}): {d}", e.index)),
                (Some(op), None) => Some(format!("operation {} ({op})", e.index)),
                (None, d) => d.clone(),
            };
            return Err(Error::from_ovsdb_error(&e.error, details));
        }
        let uuids = parsed.named_uuids(ops);
        Ok(Transacted {
            results: parsed.results,
            uuids,
            request_bytes,
        })
    }

    /// Starts monitoring `requests` on the configured database into `target`, with the newest
    /// method the server supports. The monitor survives reconnects (resumed, or reloaded
    /// into a cleared target). Returns once the initial contents are in `target`, or, if the
    /// connection drops first, once the monitor is registered (the next connection creates
    /// it; watch [`Event::Connected`]).
    pub async fn monitor(
        &self,
        requests: MonitorRequests,
        target: Arc<dyn MonitorTarget>,
    ) -> Result<MonitorHandle, Error> {
        let n = self.inner.next_monitor.fetch_add(1, Ordering::Relaxed);
        let id = format!("ycloud-m{n}");
        let state = Arc::new(MonitorState {
            id: json!(id),
            db: self.inner.config.db.clone(),
            requests: Mutex::new(requests),
            target,
            method: Mutex::new(MonitorMethod::CondSince),
            started_on: Mutex::new(0),
            changing: std::sync::atomic::AtomicBool::new(false),
        });
        // Registered first so notifications find it as soon as the server sends them.
        self.inner.lock_monitors().insert(id.clone(), state.clone());
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => {
                self.inner.lock_monitors().remove(&id);
                return Err(e);
            }
        };
        match start_monitor(&self.inner, &conn, &state).await {
            Ok(method) => Ok(MonitorHandle { id, method }),
            // The connection dropped: the supervisor re-creates the monitor on the next one.
            Err(Error::Disconnected { .. }) => {
                let method = *state.method.lock().unwrap_or_else(|e| e.into_inner());
                Ok(MonitorHandle { id, method })
            }
            Err(e) => {
                self.inner.lock_monitors().remove(&id);
                Err(e)
            }
        }
    }

    /// Monitors exactly the tables and columns `cache` was created for, into `cache`.
    pub async fn monitor_cache(&self, cache: &crate::cache::Cache) -> Result<MonitorHandle, Error> {
        let requests = cache
            .monitored()
            .iter()
            .map(|(t, cols)| {
                (
                    t.clone(),
                    TableMonitor {
                        columns: cols.clone(),
                        where_: None,
                    },
                )
            })
            .collect();
        self.monitor(requests, Arc::new(cache.clone())).await
    }

    /// What a monitor currently asks for (after any condition change); `None` once cancelled.
    pub fn monitor_requests(&self, handle: &MonitorHandle) -> Option<MonitorRequests> {
        let state = self.inner.lock_monitors().get(&handle.id).cloned()?;
        let requests = state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(requests)
    }

    /// Replaces the conditions of a monitor (`monitor_cond_change`; `requests` is the whole
    /// set, the same tables and columns as before, `where_: None` for all rows). The server then
    /// sends the rows that now match and deletes those that no longer do, before its reply:
    /// when this returns `Ok`, the target holds exactly what the new conditions select. If
    /// the connection drops first, the monitor is reloaded (not resumed) on the next one.
    pub async fn monitor_cond_change(
        &self,
        handle: &MonitorHandle,
        requests: MonitorRequests,
    ) -> Result<(), Error> {
        let state = self
            .inner
            .lock_monitors()
            .get(&handle.id)
            .cloned()
            .ok_or_else(|| Error::Schema(format!("no monitor {} on this client", handle.id)))?;
        let method = *state.method.lock().unwrap_or_else(|e| e.into_inner());
        if method == MonitorMethod::Plain {
            return Err(Error::Rpc {
                method: "monitor_cond_change".into(),
                error: "not supported".into(),
                details: Some("the server only speaks plain monitor".into()),
            });
        }
        // Only the tables whose conditions change go on the wire, each with an explicit
        // `where` (ovsdb-server 3.1 closes the connection on a table without one) and no
        // `columns` (a monitor's columns cannot change).
        let mut wire = MonitorRequests::new();
        {
            let current = state.requests.lock().unwrap_or_else(|e| e.into_inner());
            for (table, new) in &requests {
                let old = current.get(table);
                if old.map(|o| &o.columns) != Some(&new.columns) {
                    return Err(Error::Schema(format!(
                        "monitor {}: table {table}: a condition change cannot add a table or change its columns",
                        handle.id
                    )));
                }
                if old.map(|o| &o.where_) != Some(&new.where_) {
                    let where_ = new.where_.clone().unwrap_or_else(|| json!([true]));
                    wire.insert(
                        table.clone(),
                        TableMonitor {
                            columns: None,
                            where_: Some(where_),
                        },
                    );
                }
            }
        }
        if wire.is_empty() {
            return Ok(());
        }
        // Stored first: if the connection drops now, the re-created monitor uses the new
        // conditions, and reloads (see `MonitorState::changing`).
        state.changing.store(true, Ordering::Release);
        *state.requests.lock().unwrap_or_else(|e| e.into_inner()) = requests;
        let params = json!([state.id, state.id, requests_json(&wire, method)]);
        let res = self.call("monitor_cond_change", params).await.map(|_| ());
        if res.is_ok() {
            state.changing.store(false, Ordering::Release);
        }
        res
    }

    /// Stops a monitor; its target keeps what it had.
    pub async fn monitor_cancel(&self, handle: &MonitorHandle) -> Result<(), Error> {
        let removed = self.inner.lock_monitors().remove(&handle.id);
        if removed.is_none() {
            return Ok(());
        }
        match self.call("monitor_cancel", json!([handle.id])).await {
            Ok(_) | Err(Error::Disconnected { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `lock`: true if granted now; otherwise an [`Event::Locked`] follows when it is.
    pub async fn lock(&self, name: &str) -> Result<bool, Error> {
        let v = self.call("lock", json!([name])).await?;
        Ok(v["locked"].as_bool().unwrap_or(false))
    }

    /// `steal`: takes the lock from its holder (who gets `stolen`).
    pub async fn steal(&self, name: &str) -> Result<(), Error> {
        self.call("steal", json!([name])).await.map(|_| ())
    }

    pub async fn unlock(&self, name: &str) -> Result<(), Error> {
        self.call("unlock", json!([name])).await.map(|_| ())
    }

    /// Asks the server not to drop us on a database change (conversion) but to notify.
    pub async fn set_db_change_aware(&self, aware: bool) -> Result<(), Error> {
        self.call("set_db_change_aware", json!([aware]))
            .await
            .map(|_| ())
    }
}

/// A committed transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Transacted {
    pub results: Vec<OperationResult>,
    /// `uuid-name` of each insert → the row's real UUID.
    pub uuids: BTreeMap<String, Uuid>,
    /// The size of the request on the wire, in bytes.
    pub request_bytes: usize,
}

/// Sends `cancel` for a request whose future was dropped before its reply.
struct CancelOnDrop {
    conn: Connection,
    id: Option<u64>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let _ = self.conn.cancel(id);
            self.conn.forget(id);
        }
    }
}

async fn call_cancellable(conn: &Connection, method: &str, params: Value) -> Result<Value, Error> {
    let (tx, rx) = oneshot::channel();
    let id = conn.send_request(
        method,
        params,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )?;
    wait_reply(conn, id, rx).await
}

/// [`call_cancellable`] with `params` encoded straight to bytes (see
/// [`Connection::send_request_serialized`]); also returns the request's size.
async fn call_serialized(
    conn: &Connection,
    method: &str,
    params: &impl serde::Serialize,
) -> Result<(Value, usize), Error> {
    let (tx, rx) = oneshot::channel();
    let (id, size) = conn.send_request_serialized(
        method,
        params,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )?;
    wait_reply(conn, id, rx).await.map(|v| (v, size))
}

/// Waits for the reply to request `id`; cancels it if dropped first.
async fn wait_reply(
    conn: &Connection,
    id: u64,
    rx: oneshot::Receiver<Result<Value, Error>>,
) -> Result<Value, Error> {
    let mut guard = CancelOnDrop {
        conn: conn.clone(),
        id: Some(id),
    };
    let r = rx.await.unwrap_or_else(|_| {
        Err(Error::Disconnected {
            reason: "reply handler dropped".into(),
            retriable: true,
        })
    });
    guard.id = None;
    r
}

/// Routes notifications, in the reader task.
struct ClientSink {
    inner: std::sync::Weak<Inner>,
    server: Arc<ServerWatch>,
}

impl ClientSink {
    /// Applies one `update`/`update2`/`update3` to its monitor's target; a target that
    /// cannot apply it makes the client reconnect and reload (never continue silently).
    fn apply_update(
        inner: &Inner,
        id: &str,
        method: &str,
        txn: Option<String>,
        apply: impl FnOnce(&dyn monitor::MonitorTarget, UpdateFormat) -> Result<(), String>,
    ) {
        let Some(state) = inner.lock_monitors().get(id).cloned() else {
            tracing::debug!(monitor = %id, "update for an unknown monitor (cancelled?)");
            return;
        };
        let fmt = if method == "update" {
            UpdateFormat::V1
        } else {
            UpdateFormat::V2
        };
        match apply(&*state.target, fmt) {
            Ok(()) => {
                if let Some(t) = txn {
                    state.target.set_last_txn_id(Some(t));
                }
            }
            Err(error) => {
                // The target may now be missing a change: never continue silently.
                // Forget the txn id so the reconnect reloads everything.
                state.target.set_last_txn_id(None);
                let _ = inner.events.send(Event::MonitorError {
                    monitor: id.to_owned(),
                    error: error.clone(),
                });
                let _ = inner
                    .control
                    .send(Control::Reconnect(format!("monitor {id}: {error}")));
            }
        }
    }
}

impl NotificationSink for ClientSink {
    fn notify(&mut self, n: Notification) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let params = n.params.as_array().map(Vec::as_slice).unwrap_or(&[]);
        let first_str = || {
            params
                .first()
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        match n.method.as_str() {
            "update" | "update2" | "update3" => {
                let id = first_str();
                if id == SERVER_MONITOR_ID {
                    if let Some(u) = params.get(1)
                        && let Err(reason) = self.server.update(&inner.max_index, u)
                    {
                        let _ = inner.control.send(Control::Reconnect(reason));
                    }
                    return;
                }
                let (txn, updates) = match n.method.as_str() {
                    "update3" => (params.get(1).and_then(Value::as_str), params.get(2)),
                    _ => (None, params.get(1)),
                };
                Self::apply_update(
                    &inner,
                    &id,
                    &n.method,
                    txn.map(str::to_owned),
                    |target, fmt| match updates {
                        Some(u) => target.apply(fmt, u),
                        None => Err(format!("{} without table updates", n.method)),
                    },
                );
            }
            "locked" => {
                let _ = inner.events.send(Event::Locked { lock: first_str() });
            }
            "stolen" => {
                let _ = inner.events.send(Event::Stolen { lock: first_str() });
            }
            other => tracing::debug!(method = other, "ignored notification"),
        }
    }

    /// Updates of our own monitors go to their targets as text
    /// ([`monitor::MonitorTarget::apply_str`]); everything else is parsed and goes through
    /// [`ClientSink::notify`].
    fn notify_raw(&mut self, method: String, params: RawJson) {
        let parsed = || match params.to_value() {
            Ok(params) => Some(Notification {
                method: method.clone(),
                params,
            }),
            Err(e) => {
                tracing::warn!(method, error = %e, "dropped a notification that is not valid JSON");
                None
            }
        };
        if !matches!(method.as_str(), "update" | "update2" | "update3") {
            if let Some(n) = parsed() {
                self.notify(n);
            }
            return;
        }
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let parts = params.elements().unwrap_or_default();
        let id = parts
            .first()
            .and_then(|p| p.to_value().ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if id == SERVER_MONITOR_ID {
            // Small, and handled as a tree.
            if let Some(n) = parsed() {
                self.notify(n);
            }
            return;
        }
        let (txn, updates) = match method.as_str() {
            "update3" => (
                parts
                    .get(1)
                    .and_then(|p| p.to_value().ok())
                    .and_then(|v| v.as_str().map(str::to_owned)),
                parts.get(2),
            ),
            _ => (None, parts.get(1)),
        };
        Self::apply_update(&inner, &id, &method, txn, |target, fmt| match updates {
            Some(u) => target.apply_str(fmt, u.as_str()),
            None => Err(format!("{method} without table updates")),
        });
    }
}

/// Connects to one remote and prepares it: checks `_Server`, re-creates monitors.
async fn establish(inner: &Arc<Inner>, remote: &Remote) -> Result<Connection, Error> {
    let server = Arc::new(ServerWatch {
        db: inner.config.db.clone(),
        leader_only: inner.config.leader_only,
        row: Mutex::new(None),
    });
    let sink = ClientSink {
        inner: Arc::downgrade(inner),
        server: server.clone(),
    };
    let opts = ConnectionOptions {
        probe_interval: inner.config.probe_interval,
        max_message: inner.config.max_message,
        connect_timeout: inner.config.request_timeout.min(Duration::from_secs(10)),
    };
    let conn = Connection::connect(remote, inner.tls.as_ref(), opts, sink).await?;
    let setup = async {
        let reqs =
            json!({"Database": {"columns": ["name", "model", "connected", "leader", "index"]}});
        let (tx, rx) = oneshot::channel();
        let (srv, inn) = (server.clone(), inner.clone());
        conn.send_request(
            "monitor",
            json!(["_Server", SERVER_MONITOR_ID, reqs]),
            Box::new(move |r| {
                let _ = tx.send(r.map(|v| srv.update(&inn.max_index, &v)));
            }),
        )?;
        match rx.await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(reason))) => {
                return Err(Error::NotConnected {
                    reason: format!("{remote}: {reason}"),
                });
            }
            // A server without _Server (very old) cannot be a cluster member: fine.
            Ok(Err(Error::Rpc { .. })) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Disconnected {
                    reason: "setup".into(),
                    retriable: true,
                });
            }
        }
        // The schema may differ between members during an upgrade: fetch it every time.
        let schema_json = conn.call("get_schema", json!([inner.config.db])).await?;
        let schema = crate::schema::DatabaseSchema::from_json(&schema_json)
            .map_err(|e| Error::Schema(format!("{remote}: {}", error_chain(&e))))?;
        if let Some(check) = &inner.config.models {
            let tables: Option<Vec<&str>> = check
                .tables
                .as_ref()
                .map(|t| t.iter().map(String::as_str).collect());
            crate::model::check_compat(check.ours, &schema, tables.as_deref())
                .map_err(|report| Error::Schema(format!("{remote}: {report}")))?;
        }
        *inner.schema.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(schema));
        let monitors: Vec<_> = inner.lock_monitors().values().cloned().collect();
        for m in monitors {
            start_monitor(inner, &conn, &m).await?;
        }
        Ok(())
    };
    match tokio::time::timeout(inner.config.request_timeout, setup).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(e)) => {
            conn.close();
            Err(e)
        }
        Err(_) => {
            conn.close();
            Err(Error::NotConnected {
                reason: format!("{remote}: setup timed out"),
            })
        }
    }
}

async fn supervise(
    weak: std::sync::Weak<Inner>,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut next_remote = 0usize;
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(inner) = weak.upgrade() else { break };
        let n = inner.remotes.len();
        let mut connected = None;
        let mut errors = Vec::new();
        for k in 0..n {
            let remote = &inner.remotes[(next_remote + k) % n];
            match establish(&inner, remote).await {
                Ok(c) => {
                    next_remote = (next_remote + k) % n;
                    connected = Some(c);
                    break;
                }
                Err(e) => errors.push(format!("{remote}: {}", error_chain(&e))),
            }
        }
        let Some(conn) = connected else {
            tracing::debug!(errors = ?errors, failures, "no usable OVSDB server");
            *inner.last_errors.lock().unwrap_or_else(|e| e.into_inner()) = errors;
            let delay = inner.config.backoff.delay(failures);
            failures = failures.saturating_add(1);
            drop(inner);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        failures = 0;
        inner.stats.connects.fetch_add(1, Ordering::Relaxed);
        let _ = inner.events.send(Event::Connected {
            remote: conn.remote().to_owned(),
        });
        inner.conn.send_replace(Some(conn.clone()));
        drop(inner);
        let reason = tokio::select! {
            r = conn.closed() => error_chain(&*r),
            c = control.recv() => match c {
                Some(Control::Reconnect(r)) => r,
                None => "client dropped".into(),
            },
            _ = stop.changed() => "client closed".into(),
        };
        conn.close();
        // Try the next member first: this one just failed us (or lost leadership).
        next_remote += 1;
        if let Some(inner) = weak.upgrade() {
            inner.conn.send_replace(None);
            let _ = inner.events.send(Event::Disconnected {
                reason: reason.clone(),
            });
        }
        // Drain stale reconnect requests meant for the connection just closed.
        while control.try_recv().is_ok() {}
    }
    if let Some(inner) = weak.upgrade()
        && let Some(c) = inner.conn.send_replace(None)
    {
        c.close();
    }
}
