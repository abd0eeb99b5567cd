//! Errors of the probe crate. A failed probe is not an error of this kind: it is an
//! [`Outcome`](crate::Outcome) with a message; these are the failures to set a probe up.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe's spec cannot be probed (e.g. a TCP probe without a port).
    #[error("invalid probe {what}: {why}")]
    InvalidSpec { what: String, why: String },
    /// A file of the status directory could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A probe or status file does not parse.
    #[error("{}: {why}", path.display())]
    Parse { path: PathBuf, why: String },
    /// The netns thread could not be started or has died.
    #[error("netns worker: {0}")]
    NetnsWorker(String),
}

impl ProbeError {
    /// A short, stable name of the failed step, for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidSpec { .. } => "invalid-spec",
            Self::File { .. } => "file",
            Self::Parse { .. } => "parse",
            Self::NetnsWorker(_) => "netns-worker",
        }
    }
}
