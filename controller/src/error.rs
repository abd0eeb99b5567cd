//! The controller runtime's errors (the compiler's own are in its modules): one enum,
//! variants named after the step that failed, with a category for metrics and logs.

use std::net::SocketAddr;

/// Why the controller could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("flags")]
    Config(#[from] crate::config::ConfigError),
    #[error("NB client configuration")]
    NbConfig(#[source] ycloud_ovsdb::Error),
    #[error("reading the OVN_Northbound schema")]
    Schema(#[source] ycloud_ovsdb::Error),
    #[error("building the NB cache")]
    Cache(#[source] ycloud_ovsdb::cache::CacheError),
    #[error("monitoring NB")]
    Monitor(#[source] ycloud_ovsdb::Error),
    #[error("serving /healthz, /readyz and /metrics on {addr}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A short label for metrics and log fields.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::NbConfig(_) => "nb-config",
            Error::Schema(_) | Error::Cache(_) | Error::Monitor(_) => "northbound",
            Error::Http { .. } => "http",
        }
    }
}
