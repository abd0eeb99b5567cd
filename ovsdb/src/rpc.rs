//! One JSON-RPC 1.0 connection: a reader task and a writer task around a byte stream.
//!
//! The reader is the only place messages are consumed, in wire order:
//! - a server `echo` request is answered right there, so a busy caller never makes the
//!   server's inactivity probe drop us;
//! - a reply is routed by id to the handler registered with the request, and that handler
//!   runs *in the reader* before the next message is read. The client uses this to apply an
//!   initial monitor reply to the cache before any later `update` for the same monitor;
//! - a notification is handed to the [`NotificationSink`] before the next message is read.
//!   OVSDB sends the `update` caused by a transaction before the transaction's reply, so a
//!   caller whose `transact` returned can rely on the sink having seen the update. Nothing
//!   is dropped: the default sink is an unbounded channel.
//!
//! Our own inactivity probe: after `probe_interval` without any incoming message the reader
//! sends an `echo`; if another interval passes with nothing received, the connection is
//! declared dead and closed. When the connection closes for any reason, every pending
//! request fails with [`Error::Disconnected`] (retriable) and is never re-sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::codec::{
    self, CodecError, DEFAULT_MAX_MESSAGE, Frame, FrameCodec, JsonCodec, RawJson, excerpt_str,
};
use crate::error::Error;
use crate::jsonrpc::{Message, MessageError, excerpt};
use crate::transport::{self, BoxStream, Remote};

/// Process-wide connection numbers, so state can remember which connection it belongs to.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// The id of our inactivity probe; its reply is recognised and ignored.
const PROBE_ID: &str = "ycloud-probe";

#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Send an `echo` after this long without receiving anything; close the connection after
    /// twice this long. `None` disables the probe.
    pub probe_interval: Option<Duration>,
    /// Largest accepted message.
    pub max_message: usize,
    /// Limit for opening the stream (TCP connect and TLS handshake).
    pub connect_timeout: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            probe_interval: Some(Duration::from_secs(5)),
            max_message: DEFAULT_MAX_MESSAGE,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A request with `"id": null` from the server (`update`, `update2`, `update3`, `locked`,
/// `stolen`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub method: String,
    pub params: Value,
}

/// Receives notifications inside the reader task, in wire order. Must not block: the reader
/// reads nothing else while it runs.
pub trait NotificationSink: Send + 'static {
    fn notify(&mut self, n: Notification);
    /// Every notification arrives here first, its `params` (a JSON array) still as text, so
    /// a sink can hand big parts (an update's table-updates) on without building a
    /// `serde_json::Value` tree. The default parses them and calls [`NotificationSink::notify`].
    fn notify_raw(&mut self, method: String, params: RawJson) {
        match params.to_value() {
            Ok(params) => self.notify(Notification { method, params }),
            // The reader checked the frame's structure, not every token: say what was lost.
            Err(e) => {
                tracing::warn!(method, error = %e, "dropped a notification that is not valid JSON")
            }
        }
    }
}

/// The default sink: an unbounded channel, so nothing is ever dropped or reordered.
impl NotificationSink for mpsc::UnboundedSender<Notification> {
    fn notify(&mut self, n: Notification) {
        // A dropped receiver means nobody wants notifications any more.
        let _ = self.send(n);
    }
}

/// Called with the outcome of a request, inside the reader task (or in whatever closes the
/// connection, with `Error::Disconnected`).
pub type ReplyHandler = Box<dyn FnOnce(Result<Value, Error>) + Send>;

/// Like [`ReplyHandler`], getting the `result` as text: for replies too big to want a
/// `serde_json::Value` tree of (the initial monitor reply).
pub type RawReplyHandler = Box<dyn FnOnce(Result<RawJson, Error>) + Send>;

enum Handler {
    Value(ReplyHandler),
    Raw(RawReplyHandler),
}

impl Handler {
    fn fail(self, e: Error) {
        match self {
            Handler::Value(h) => h(Err(e)),
            Handler::Raw(h) => h(Err(e)),
        }
    }
}

struct Pending {
    method: String,
    handler: Handler,
}

struct State {
    pending: HashMap<u64, Pending>,
    /// Set once; after that no request is accepted.
    closed: Option<Arc<Error>>,
    tasks: Vec<AbortHandle>,
}

/// What the writer task sends, in channel order.
enum Outgoing {
    /// A message as a JSON tree (small ones: probes, echo replies, most requests).
    Value(Value),
    /// A message already encoded by its sender (a big `transact`: serialized straight from
    /// the operations, with no JSON tree of the request in between).
    Encoded(Vec<u8>),
}

struct Shared {
    remote: String,
    state: Mutex<State>,
    out: mpsc::UnboundedSender<Outgoing>,
    next_id: AtomicU64,
    serial: u64,
    closed_tx: watch::Sender<Option<Arc<Error>>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A handler panicking while we hold the lock is impossible (handlers run unlocked),
        // so poisoning can only come from a bug elsewhere; keep going with the data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection once: records why, stops both tasks and fails every pending
    /// request with a retriable `Disconnected`.
    fn shutdown(&self, reason: Error) {
        let (pending, tasks, reason) = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            let reason = Arc::new(reason);
            st.closed = Some(reason.clone());
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.tasks),
                reason,
            )
        };
        tracing::debug!(remote = %self.remote, error = %reason, "ovsdb connection closed");
        for t in tasks {
            t.abort();
        }
        let text = error_chain(&reason);
        for (_, p) in pending {
            p.handler.fail(Error::Disconnected {
                reason: text.clone(),
                retriable: true,
            });
        }
        self.closed_tx.send_replace(Some(reason));
    }
}

/// "outer: inner: innermost", for reasons carried as text.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A cheap-to-clone handle to one connection. Dropping every handle does not close it; call
/// [`Connection::close`].
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.shared.remote)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Connects to `remote` and starts the reader and writer tasks.
    pub async fn connect(
        remote: &Remote,
        tls: Option<&Arc<rustls::ClientConfig>>,
        opts: ConnectionOptions,
        sink: impl NotificationSink,
    ) -> Result<Connection, Error> {
        let stream = transport::connect(remote, tls, opts.connect_timeout).await?;
        Ok(Connection::start(stream, remote.to_string(), opts, sink))
    }

    /// Runs the protocol over an already open stream (any transport, or a test's fake).
    pub fn start(
        stream: BoxStream,
        remote: String,
        opts: ConnectionOptions,
        sink: impl NotificationSink,
    ) -> Connection {
        let (rd, wr) = tokio::io::split(stream);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (closed_tx, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            remote,
            state: Mutex::new(State {
                pending: HashMap::new(),
                closed: None,
                tasks: Vec::new(),
            }),
            out: out_tx,
            next_id: AtomicU64::new(1),
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            closed_tx,
        });
        let reader =
            FramedRead::with_capacity(rd, FrameCodec::new(opts.max_message), codec::READ_CAPACITY);
        let writer = FramedWrite::new(wr, JsonCodec::new(opts.max_message));
        let w = tokio::spawn(write_loop(shared.clone(), writer, out_rx));
        let r = tokio::spawn(read_loop(
            shared.clone(),
            reader,
            Box::new(sink),
            opts.probe_interval,
        ));
        {
            let mut st = shared.lock();
            if st.closed.is_some() {
                // Closed before we got here (the peer hung up at once): stop the tasks now.
                w.abort();
                r.abort();
            } else {
                st.tasks.push(w.abort_handle());
                st.tasks.push(r.abort_handle());
            }
        }
        Connection { shared }
    }

    pub fn remote(&self) -> &str {
        &self.shared.remote
    }

    /// A number unique to this connection within the process.
    pub fn serial(&self) -> u64 {
        self.shared.serial
    }

    /// Sends a request; `handler` gets the result (in the reader task). Returns the id, for
    /// [`Connection::cancel`].
    pub fn send_request(
        &self,
        method: &str,
        params: Value,
        handler: ReplyHandler,
    ) -> Result<u64, Error> {
        self.send(method, params, Handler::Value(handler))
    }

    /// [`Connection::send_request`] whose handler gets the `result` unparsed, as text.
    pub fn send_request_raw(
        &self,
        method: &str,
        params: Value,
        handler: RawReplyHandler,
    ) -> Result<u64, Error> {
        self.send(method, params, Handler::Raw(handler))
    }

    /// [`Connection::send_request`] with `params` encoded straight from any `Serialize`
    /// value: no `serde_json::Value` tree of them is built (a 10,000-service transaction's
    /// request is ~10 MB of JSON). Fails before anything is sent if `params` does not
    /// encode (an OVSDB real that is not finite). Returns the request's id and size in
    /// bytes.
    pub fn send_request_serialized(
        &self,
        method: &str,
        params: &impl serde::Serialize,
        handler: ReplyHandler,
    ) -> Result<(u64, usize), Error> {
        /// `{"method": …, "params": …, "id": …}` borrowing its parts.
        #[derive(serde::Serialize)]
        struct Request<'a, P> {
            id: u64,
            method: &'a str,
            params: &'a P,
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let bytes = serde_json::to_vec(&Request { id, method, params }).map_err(|source| {
            Error::Encode {
                method: method.to_owned(),
                source,
            }
        })?;
        let size = bytes.len();
        tracing::debug!(
            method,
            bytes = size,
            encode_us = started.elapsed().as_micros() as u64,
            "request encoded"
        );
        self.register_and_send(
            id,
            method,
            Handler::Value(handler),
            Outgoing::Encoded(bytes),
        )?;
        Ok((id, size))
    }

    fn send(&self, method: &str, params: Value, handler: Handler) -> Result<u64, Error> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = Message::request(method, params, json!(id)).to_value();
        self.register_and_send(id, method, handler, Outgoing::Value(msg))?;
        Ok(id)
    }

    /// Registers request `id`'s handler, then queues its message: registered before it is
    /// written, so the reply can never beat the registration.
    fn register_and_send(
        &self,
        id: u64,
        method: &str,
        handler: Handler,
        msg: Outgoing,
    ) -> Result<(), Error> {
        {
            let mut st = self.shared.lock();
            if let Some(reason) = &st.closed {
                let reason = error_chain(&**reason);
                drop(st);
                return Err(Error::Disconnected {
                    reason,
                    retriable: true,
                });
            }
            st.pending.insert(
                id,
                Pending {
                    method: method.to_owned(),
                    handler,
                },
            );
        }
        if self.shared.out.send(msg).is_err() {
            self.shared.shutdown(Error::Io {
                remote: self.shared.remote.clone(),
                source: std::io::Error::other("writer task gone"),
            });
        }
        Ok(())
    }

    /// Sends a request and waits for its result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, Error> {
        let (tx, rx) = oneshot::channel();
        self.send_request(
            method,
            params,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.await.unwrap_or_else(|_| {
            Err(Error::Disconnected {
                reason: "reply handler dropped".into(),
                retriable: true,
            })
        })
    }

    /// Sends a notification (no reply).
    pub fn notify(&self, method: &str, params: Value) -> Result<(), Error> {
        if let Some(reason) = &self.shared.lock().closed {
            return Err(Error::Disconnected {
                reason: error_chain(&**reason),
                retriable: true,
            });
        }
        let _ = self.shared.out.send(Outgoing::Value(
            Message::notification(method, params).to_value(),
        ));
        Ok(())
    }

    /// Sends `cancel` for request `id` (RFC 7047 §4.1.4: the reply would then be an error
    /// `canceled`). See [`Connection::forget`] for why callers should not wait for it.
    pub fn cancel(&self, id: u64) -> Result<(), Error> {
        self.notify("cancel", json!([id]))
    }

    /// Stops waiting for request `id`: its handler is dropped without being called and a
    /// late reply is ignored. Used together with [`Connection::cancel`], because
    /// ovsdb-server 3.1 does not answer `cancel` (it compares the `params` array with the
    /// request id, which never matches), so the reply may never come.
    pub fn forget(&self, id: u64) {
        self.shared.lock().pending.remove(&id);
    }

    /// Closes the connection; pending requests fail with `Disconnected`.
    pub fn close(&self) {
        self.shared.shutdown(Error::Disconnected {
            reason: "closed by the client".into(),
            retriable: false,
        });
    }

    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// Resolves when the connection has closed, with the reason.
    pub async fn closed(&self) -> Arc<Error> {
        let mut rx = self.shared.closed_tx.subscribe();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                return Arc::new(Error::Closed);
            }
        }
    }
}

async fn write_loop(
    shared: Arc<Shared>,
    mut writer: FramedWrite<tokio::io::WriteHalf<BoxStream>, JsonCodec>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    async fn feed(
        writer: &mut FramedWrite<tokio::io::WriteHalf<BoxStream>, JsonCodec>,
        msg: Outgoing,
    ) -> Result<(), CodecError> {
        match msg {
            Outgoing::Value(v) => writer.feed(&v).await,
            // Behind whatever was fed before it, in the same buffer: order is kept.
            Outgoing::Encoded(bytes) => {
                writer.write_buffer_mut().extend_from_slice(&bytes);
                Ok(())
            }
        }
    }
    while let Some(first) = rx.recv().await {
        // Batch what is queued into one flush: pipelined transactions go out together.
        let mut res = feed(&mut writer, first).await;
        while res.is_ok() {
            match rx.try_recv() {
                Ok(v) => res = feed(&mut writer, v).await,
                Err(_) => break,
            }
        }
        if res.is_ok() {
            res = SinkExt::<&Value>::flush(&mut writer).await;
        }
        // The write buffer keeps the capacity of the largest request (a cold start's one
        // transaction of every service is tens of MB): let a flushed big one go.
        if res.is_ok() && writer.write_buffer().capacity() > codec::SHRINK_AFTER {
            *writer.write_buffer_mut() = bytes::BytesMut::new();
        }
        if let Err(e) = res {
            shared.shutdown(codec_error(&shared.remote, e));
            return;
        }
    }
}

fn codec_error(remote: &str, e: CodecError) -> Error {
    match e {
        CodecError::Io(source) => Error::Io {
            remote: remote.to_owned(),
            source,
        },
        other => Error::Protocol {
            remote: remote.to_owned(),
            source: other,
        },
    }
}

async fn read_loop(
    shared: Arc<Shared>,
    mut reader: FramedRead<tokio::io::ReadHalf<BoxStream>, FrameCodec>,
    mut sink: Box<dyn NotificationSink>,
    probe: Option<Duration>,
) {
    let mut probe_sent = false;
    let reason = loop {
        let next = match probe {
            Some(idle) => match tokio::time::timeout(idle, reader.next()).await {
                Ok(n) => n,
                Err(_) if probe_sent => {
                    break Error::InactivityProbe {
                        remote: shared.remote.clone(),
                        idle: idle * 2,
                    };
                }
                Err(_) => {
                    probe_sent = true;
                    let _ = shared.out.send(Outgoing::Value(
                        Message::request("echo", json!([]), json!(PROBE_ID)).to_value(),
                    ));
                    continue;
                }
            },
            None => reader.next().await,
        };
        probe_sent = false;
        let frame = match next {
            None => {
                break Error::Io {
                    remote: shared.remote.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed by the server",
                    ),
                };
            }
            Some(Err(e)) => break codec_error(&shared.remote, e),
            Some(Ok(f)) => f,
        };
        if let Err(e) = handle_frame(&shared, &mut *sink, frame) {
            break e;
        }
    };
    shared.shutdown(reason);
}

/// One received message. Responses and notifications are split at the top level without
/// parsing their big member (`result`, `params`): a reply whose handler wants text and every
/// notification's params go on as slices of the frame. Everything else (and anything the
/// split does not recognise) is parsed whole and checked as before.
fn handle_frame(
    shared: &Shared,
    sink: &mut dyn NotificationSink,
    frame: Frame,
) -> Result<(), Error> {
    let text = frame.as_str();
    let json_err = |source| {
        codec_error(
            &shared.remote,
            CodecError::Json {
                offset: frame.offset,
                source,
            },
        )
    };
    let bad_message = |source| Error::BadMessage {
        remote: shared.remote.clone(),
        source,
    };
    let whole = |sink: &mut dyn NotificationSink| -> Result<(), Error> {
        let value: Value = serde_json::from_str(text).map_err(json_err)?;
        let msg = Message::from_value(value).map_err(bad_message)?;
        handle_message(shared, sink, msg);
        Ok(())
    };
    let Ok(members) = codec::object_members(text) else {
        return whole(sink);
    };
    // A repeated member: the last one counts, as when parsing into a map.
    let get = |k: &str| {
        members
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, r)| r.clone())
    };
    let small = |r: std::ops::Range<usize>| -> Result<Value, Error> {
        serde_json::from_str(&text[r]).map_err(json_err)
    };
    let id = get("id").map(small).transpose()?.unwrap_or(Value::Null);
    if let Some(m) = get("method") {
        let (Some(p), true) = (get("params"), id.is_null()) else {
            return whole(sink);
        };
        let method = match small(m)? {
            Value::String(s) => s,
            other => return Err(bad_message(MessageError::BadMethod(excerpt(&other)))),
        };
        if !text[p.clone()].starts_with('[') {
            let params = small(p)?;
            return Err(bad_message(MessageError::BadParams(excerpt(&params))));
        }
        sink.notify_raw(method, frame.slice(p));
        return Ok(());
    }
    let result = get("result");
    let error = get("error");
    if result.is_none() && error.is_none() {
        return whole(sink);
    }
    if id.is_null() {
        return Err(bad_message(MessageError::MissingId(excerpt_str(text))));
    }
    let error = error.map(small).transpose()?.unwrap_or(Value::Null);
    let Some(n) = id.as_u64() else {
        if id != json!(PROBE_ID) {
            tracing::debug!(remote = %shared.remote, id = %id, "reply with an id we never used");
        }
        return Ok(());
    };
    let Some(p) = shared.lock().pending.remove(&n) else {
        tracing::debug!(remote = %shared.remote, id = n, "reply to no pending request");
        return Ok(());
    };
    if !error.is_null() {
        p.handler.fail(rpc_error(&p.method, &error));
        return Ok(());
    }
    match p.handler {
        Handler::Raw(h) => h(Ok(match result {
            Some(r) => frame.slice(r),
            None => RawJson::from_static("null"),
        })),
        Handler::Value(h) => match result.map(small).transpose() {
            Ok(v) => h(Ok(v.unwrap_or(Value::Null))),
            Err(e) => {
                h(Err(Error::Disconnected {
                    reason: error_chain(&e),
                    retriable: true,
                }));
                return Err(e);
            }
        },
    }
    Ok(())
}

/// A message parsed whole (requests from the server, and anything unusual).
fn handle_message(shared: &Shared, sink: &mut dyn NotificationSink, msg: Message) {
    match msg {
        Message::Request { method, params, id } => {
            let reply = if method == "echo" {
                Message::ok(params, id)
            } else {
                Message::err(json!("unknown method"), id)
            };
            let _ = shared.out.send(Outgoing::Value(reply.to_value()));
        }
        Message::Notification { method, params } => sink.notify(Notification { method, params }),
        Message::Response { result, error, id } => {
            let Some(n) = id.as_u64() else {
                if id != json!(PROBE_ID) {
                    tracing::debug!(remote = %shared.remote, id = %id, "reply with an id we never used");
                }
                return;
            };
            let Some(p) = shared.lock().pending.remove(&n) else {
                tracing::debug!(remote = %shared.remote, id = n, "reply to no pending request");
                return;
            };
            if !error.is_null() {
                p.handler.fail(rpc_error(&p.method, &error));
                return;
            }
            match p.handler {
                Handler::Value(h) => h(Ok(result)),
                // Only reached when the split failed; hand the text of the parsed value on.
                Handler::Raw(h) => match serde_json::to_string(&result) {
                    Ok(t) => h(Ok(RawJson::from_string(t))),
                    Err(e) => h(Err(Error::Disconnected {
                        reason: e.to_string(),
                        retriable: true,
                    })),
                },
            }
        }
    }
}

/// A JSON-RPC `error` member: ovsdb-server sends a string (`"unknown method"`) or an object
/// `{"error": "...", "details": "..."}`.
fn rpc_error(method: &str, error: &Value) -> Error {
    let (text, details) = match error {
        Value::String(s) => (s.clone(), None),
        Value::Object(o) => (
            o.get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| excerpt(error)),
            o.get("details").and_then(Value::as_str).map(str::to_owned),
        ),
        other => (excerpt(other), None),
    };
    if text == "not leader" {
        return Error::NotLeader { details };
    }
    Error::Rpc {
        method: method.to_owned(),
        error: text,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair: our side as a Connection, the other side as a raw stream the test
    /// plays the server on.
    fn pair(
        opts: ConnectionOptions,
    ) -> (
        Connection,
        tokio::io::DuplexStream,
        mpsc::UnboundedReceiver<Notification>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Connection::start(Box::new(a), "test".into(), opts, tx),
            b,
            rx,
        )
    }

    async fn read_message(s: &mut tokio::io::DuplexStream) -> Value {
        let mut codec = JsonCodec::default();
        let mut buf = bytes::BytesMut::new();
        loop {
            use tokio_util::codec::Decoder;
            if let Some(v) = codec.decode(&mut buf).unwrap() {
                return v;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn notifications_reach_the_sink_before_the_reply_that_follows_them_on_the_wire() {
        let (conn, mut server, mut notes) = pair(ConnectionOptions::default());
        let call = tokio::spawn({
            let conn = conn.clone();
            async move { conn.call("transact", json!(["db"])).await }
        });
        let req = read_message(&mut server).await;
        assert_eq!(req["method"], "transact");
        let id = req["id"].clone();
        let wire = format!(
            r#"{{"method":"update3","params":["m",null,{{}}],"id":null}}{{"id":{id},"result":[{{}}],"error":null}}"#
        );
        server.write_all(wire.as_bytes()).await.unwrap();
        assert_eq!(call.await.unwrap().unwrap(), json!([{}]));
        // The notification was delivered by the reader before it routed the reply.
        let n = notes.try_recv().expect("update delivered before the reply");
        assert_eq!(n.method, "update3");
    }

    #[tokio::test]
    async fn the_servers_echo_is_answered_by_the_reader() {
        let (_conn, mut server, _notes) = pair(ConnectionOptions::default());
        server
            .write_all(br#"{"method":"echo","params":["x"],"id":"echo"}"#)
            .await
            .unwrap();
        let reply = read_message(&mut server).await;
        assert_eq!(reply, json!({"result":["x"],"error":null,"id":"echo"}));
    }

    #[tokio::test]
    async fn a_silent_peer_gets_a_probe_and_is_then_dropped() {
        let opts = ConnectionOptions {
            probe_interval: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        let (conn, mut server, _notes) = pair(opts);
        let probe = read_message(&mut server).await;
        assert_eq!(probe["method"], "echo");
        let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap();
        assert!(matches!(*reason, Error::InactivityProbe { .. }), "{reason}");
        assert!(matches!(
            conn.call("list_dbs", json!([])).await,
            Err(Error::Disconnected { .. })
        ));
    }

    #[tokio::test]
    async fn a_pending_call_fails_as_retriable_when_the_peer_hangs_up() {
        let (conn, mut server, _notes) = pair(ConnectionOptions::default());
        let call = tokio::spawn({
            let conn = conn.clone();
            async move { conn.call("transact", json!(["db"])).await }
        });
        let _ = read_message(&mut server).await;
        drop(server);
        let err = call.await.unwrap().unwrap_err();
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
        assert!(err.is_retriable());
    }

    #[tokio::test]
    async fn an_error_reply_becomes_an_rpc_error_with_the_method_name() {
        let (conn, mut server, _notes) = pair(ConnectionOptions::default());
        let call = tokio::spawn({
            let conn = conn.clone();
            async move { conn.call("monitor_cond_since", json!([])).await }
        });
        let id = read_message(&mut server).await["id"].clone();
        server
            .write_all(
                format!(r#"{{"id":{id},"result":null,"error":"unknown method"}}"#).as_bytes(),
            )
            .await
            .unwrap();
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, Error::Rpc { method, error, .. } if method == "monitor_cond_since" && error == "unknown method"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_raw_handler_gets_the_result_text_as_sent_and_a_value_handler_gets_a_tree() {
        let (conn, mut server, _notes) = pair(ConnectionOptions::default());
        let (raw_tx, raw_rx) = oneshot::channel();
        conn.send_request_raw(
            "monitor_cond",
            json!([]),
            Box::new(move |r| {
                let _ = raw_tx.send(r.map(|t| t.as_str().to_owned()));
            }),
        )
        .unwrap();
        let call = tokio::spawn({
            let conn = conn.clone();
            async move { conn.call("list_dbs", json!([])).await }
        });
        // Both requests may come in one read: decode them from one buffer.
        let mut codec = JsonCodec::default();
        let mut buf = bytes::BytesMut::new();
        let mut ids = Vec::new();
        while ids.len() < 2 {
            use tokio_util::codec::Decoder;
            match codec.decode(&mut buf).unwrap() {
                Some(v) => ids.push(v["id"].clone()),
                None => {
                    let mut chunk = [0u8; 4096];
                    let n = server.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "connection closed");
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        let (id1, id2) = (&ids[0], &ids[1]);
        // Members in an unusual order, whitespace and escapes: the raw text is a slice.
        let wire = format!(
            r#"{{"error":null, "result" : {{"T": {{"u": "\"}}\u00e9"}} }}, "id":{id1}}}{{"id":{id2},"result":["a", "b"],"error":null}}"#
        );
        server.write_all(wire.as_bytes()).await.unwrap();
        assert_eq!(
            raw_rx.await.unwrap().unwrap(),
            r#"{"T": {"u": "\"}\u00e9"} }"#
        );
        assert_eq!(call.await.unwrap().unwrap(), json!(["a", "b"]));
        assert!(!conn.is_closed());
    }

    #[tokio::test]
    async fn a_raw_handler_gets_an_error_reply_as_an_rpc_error() {
        let (conn, mut server, _notes) = pair(ConnectionOptions::default());
        let (tx, rx) = oneshot::channel();
        conn.send_request_raw(
            "monitor_cond_since",
            json!([]),
            Box::new(move |r| {
                let _ = tx.send(r.map(|t| t.as_str().to_owned()));
            }),
        )
        .unwrap();
        let id = read_message(&mut server).await["id"].clone();
        server
            .write_all(
                format!(r#"{{"id":{id},"result":null,"error":"unknown method"}}"#).as_bytes(),
            )
            .await
            .unwrap();
        let err = rx.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, Error::Rpc { method, error, .. } if method == "monitor_cond_since" && error == "unknown method"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_reply_that_is_not_json_fails_the_call_and_closes_the_connection_naming_the_offset() {
        let (conn, mut server, _notes) = pair(ConnectionOptions::default());
        let call = tokio::spawn({
            let conn = conn.clone();
            async move { conn.call("list_dbs", json!([])).await }
        });
        let id = read_message(&mut server).await["id"].clone();
        server
            .write_all(format!(r#"{{"id":{id},"result":[1,,2],"error":null}}"#).as_bytes())
            .await
            .unwrap();
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Disconnected { .. }), "{err}");
        let reason = conn.closed().await;
        let text = error_chain(&*reason);
        assert!(
            matches!(*reason, Error::Protocol { .. }) && text.contains("stream byte 0"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_notification_whose_params_are_not_an_array_closes_the_connection() {
        let (conn, mut server, _notes) = pair(ConnectionOptions::default());
        server
            .write_all(br#"{"method":"update2","params":{"a":1},"id":null}"#)
            .await
            .unwrap();
        let reason = conn.closed().await;
        assert!(matches!(*reason, Error::BadMessage { .. }), "{reason}");
    }
}
