//! Plugin ↔ daemon protocol on the unix socket: the plugin writes one JSON request and
//! shuts down its write half; the daemon answers one JSON response and closes. One request
//! per connection keeps both sides trivial and makes a daemon crash visible as EOF.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{CniError, code};
use crate::spec::{CniEnv, NetConf};

/// Largest message either side accepts: a GC request lists every attachment of the node.
pub const MAX_MESSAGE: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub env: CniEnv,
    pub config: NetConf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// The JSON the plugin prints (a result for ADD, `null` for DEL/CHECK/GC/STATUS).
    Ok(Json),
    Error(CniError),
}

/// The plugin side: sends `req` and waits up to `timeout` for the answer.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Json, CniError> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        let code = if req.env.command == crate::spec::Command::Status {
            code::PLUGIN_NOT_AVAILABLE
        } else {
            code::TRY_AGAIN_LATER
        };
        CniError::new(
            code,
            format!(
                "the ycloud node daemon (ycloud-cnid) is not reachable at {}",
                socket.display()
            ),
        )
        .with_details(format!(
            "{e}; is the ycloud-cnid DaemonSet pod running on this node?"
        ))
    })?;
    let io = |e: std::io::Error| {
        CniError::new(
            code::IO,
            format!("talking to ycloud-cnid at {}: {e}", socket.display()),
        )
    };
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let body = serde_json::to_vec(req).map_err(|e| CniError::new(code::PROTOCOL, e.to_string()))?;
    stream.write_all(&body).map_err(io)?;
    stream.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_MESSAGE)
        .read_to_end(&mut answer)
        .map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!("ycloud-cnid did not answer within {} s", timeout.as_secs()),
                )
            } else {
                io(e)
            }
        })?;
    if answer.is_empty() {
        return Err(CniError::new(
            code::TRY_AGAIN_LATER,
            "ycloud-cnid closed the connection without an answer (did it restart?)",
        ));
    }
    match serde_json::from_slice::<Response>(&answer) {
        Ok(Response::Ok(v)) => Ok(v),
        Ok(Response::Error(e)) => Err(e),
        Err(e) => Err(CniError::new(
            code::PROTOCOL,
            format!("ycloud-cnid sent an answer this plugin cannot read: {e}"),
        )),
    }
}
