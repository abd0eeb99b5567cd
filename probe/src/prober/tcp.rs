//! TCP: a connect. Closed with a reset (linger 0), like OVN's own TCP health checks: a
//! probe every second must not leave a TIME_WAIT socket behind each time.

use std::time::Instant;

use socket2::{Protocol, Type};
use tokio::net::{TcpSocket, TcpStream};

use super::{CheckResult, Prober, domain_of, ms};
use crate::netns::Namespace;
use crate::target::Target;

pub(super) async fn check(p: &Prober, t: &Target, ns: &Namespace, start: Instant) -> CheckResult {
    let s = connect(p, t, ns, true).await?;
    let latency = start.elapsed();
    drop(s);
    Ok(Some(latency))
}

/// A TCP connection to the target, from `ns`; `reset_on_close`: closing it sends a reset
/// (SO_LINGER 0, set before the connect: a zero linger never blocks the closing thread).
pub(super) async fn connect(
    p: &Prober,
    t: &Target,
    ns: &Namespace,
    reset_on_close: bool,
) -> Result<TcpStream, String> {
    let addr = t.socket_addr();
    let s = p
        .socket(ns, domain_of(&addr), Type::STREAM, Some(Protocol::TCP))
        .await?;
    if reset_on_close {
        s.set_linger(Some(std::time::Duration::ZERO))
            .map_err(|e| format!("SO_LINGER: {e}"))?;
    }
    let started = Instant::now();
    TcpSocket::from_std_stream(std::net::TcpStream::from(s))
        .connect(addr)
        .await
        .map_err(|e| {
            format!(
                "TCP connect to {addr}: {e} (after {} ms)",
                ms(started.elapsed())
            )
        })
}
