//! The client's error type: one variant per thing that failed, so callers can tell a
//! transient failure (retry with backoff) from a permanent one (fix the request).

use std::time::Duration;

use crate::codec::CodecError;
use crate::jsonrpc::MessageError;

/// Errors from connecting, calling and transacting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid remote {remote:?}: {reason}")]
    InvalidRemote { remote: String, reason: String },

    #[error("TLS configuration: {what}")]
    TlsConfig {
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    #[error("connecting to {remote}")]
    Connect {
        remote: String,
        #[source]
        source: std::io::Error,
    },

    #[error("I/O on the connection to {remote}")]
    Io {
        remote: String,
        #[source]
        source: std::io::Error,
    },

    /// The peer sent bytes that are not JSON-RPC 1.0; the connection was closed.
    #[error("protocol error from {remote}")]
    Protocol {
        remote: String,
        #[source]
        source: CodecError,
    },

    #[error("invalid JSON-RPC message from {remote}")]
    BadMessage {
        remote: String,
        #[source]
        source: MessageError,
    },

    /// The server answered with something we cannot interpret (e.g. a transact result that
    /// is not an array).
    #[error("unexpected reply to {method}: {reply}")]
    UnexpectedReply { method: String, reply: String },

    /// The peer did not answer our inactivity probe: the connection is considered dead.
    #[error("no message from {remote} for {idle:?}, not even a reply to our echo probe")]
    InactivityProbe { remote: String, idle: Duration },

    /// The connection closed while the request was in flight. The request may or may not
    /// have been executed; it was NOT re-sent. `retriable`: sending it again is safe for
    /// reads, and for writes only if the caller can check whether it committed.
    #[error("connection lost ({reason}); the request may or may not have been executed")]
    Disconnected { reason: String, retriable: bool },

    /// No usable connection (all remotes down, or none is the leader) within the wait limit.
    #[error("not connected to any usable server: {reason}")]
    NotConnected { reason: String },

    /// A JSON-RPC level error reply (e.g. `unknown method`, `unknown database`).
    #[error("server error on {method}: {error}{}", details_suffix(details))]
    Rpc {
        method: String,
        error: String,
        details: Option<String>,
    },

    /// A transaction failed on the server with an error we have no variant for.
    #[error("transaction failed: {error}{}", details_suffix(details))]
    Server {
        error: String,
        details: Option<String>,
    },

    #[error("constraint violation{}", details_suffix(details))]
    ConstraintViolation { details: Option<String> },

    #[error("referential integrity violation{}", details_suffix(details))]
    ReferentialIntegrity { details: Option<String> },

    /// A `wait` operation's condition did not hold within its timeout.
    #[error("timed out{}", details_suffix(details))]
    Timeout { details: Option<String> },

    #[error("server is not the RAFT leader{}", details_suffix(details))]
    NotLeader { details: Option<String> },

    /// The operations do not fit the server's schema; nothing was sent.
    #[error("invalid transaction (not sent)")]
    Invalid(#[source] crate::ops::OpError),

    /// The request could not be encoded as JSON (an OVSDB real that is not finite);
    /// nothing was sent.
    #[error("encoding the {method} request (not sent)")]
    Encode {
        method: String,
        #[source]
        source: serde_json::Error,
    },

    /// The server's schema is not what we expect.
    #[error("schema: {0}")]
    Schema(String),

    /// The cache could not apply a monitor update (the cache is then out of date; the
    /// connection is dropped so the monitor reloads).
    #[error("applying a monitor update: {0}")]
    Cache(String),

    /// The client was shut down.
    #[error("client closed")]
    Closed,
}

fn details_suffix(d: &Option<String>) -> String {
    match d {
        Some(d) if !d.is_empty() => format!(": {d}"),
        _ => String::new(),
    }
}

impl Error {
    /// Maps an OVSDB error object (`{"error": "...", "details": "..."}`) from a transact
    /// result to a typed error.
    pub fn from_ovsdb_error(error: &str, details: Option<String>) -> Self {
        match error {
            "constraint violation" => Error::ConstraintViolation { details },
            "referential integrity violation" => Error::ReferentialIntegrity { details },
            "timed out" => Error::Timeout { details },
            "not leader" | "not owner" => Error::NotLeader { details },
            _ => Error::Server {
                error: error.to_owned(),
                details,
            },
        }
    }

    /// True when retrying later (or elsewhere) may succeed without changing the request.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Disconnected { retriable, .. } => *retriable,
            Error::Connect { .. }
            | Error::Io { .. }
            | Error::Protocol { .. }
            | Error::BadMessage { .. }
            | Error::InactivityProbe { .. }
            | Error::NotConnected { .. }
            | Error::NotLeader { .. }
            | Error::Timeout { .. } => true,
            Error::InvalidRemote { .. }
            | Error::TlsConfig { .. }
            | Error::UnexpectedReply { .. }
            | Error::Rpc { .. }
            | Error::Server { .. }
            | Error::ConstraintViolation { .. }
            | Error::ReferentialIntegrity { .. }
            | Error::Invalid(_)
            | Error::Encode { .. }
            | Error::Schema(_)
            | Error::Cache(_)
            | Error::Closed => false,
        }
    }

    /// A short stable name for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidRemote { .. } => "invalid_remote",
            Error::TlsConfig { .. } => "tls_config",
            Error::Connect { .. } => "connect",
            Error::Io { .. } => "io",
            Error::Protocol { .. } | Error::BadMessage { .. } => "protocol",
            Error::UnexpectedReply { .. } => "unexpected_reply",
            Error::InactivityProbe { .. } => "inactivity_probe",
            Error::Disconnected { .. } => "disconnected",
            Error::NotConnected { .. } => "not_connected",
            Error::Rpc { .. } => "rpc",
            Error::Server { .. } => "server",
            Error::ConstraintViolation { .. } => "constraint_violation",
            Error::ReferentialIntegrity { .. } => "referential_integrity",
            Error::Timeout { .. } => "timeout",
            Error::NotLeader { .. } => "not_leader",
            Error::Invalid(_) => "invalid",
            Error::Encode { .. } => "encode",
            Error::Schema(_) => "schema",
            Error::Cache(_) => "cache",
            Error::Closed => "closed",
        }
    }
}
