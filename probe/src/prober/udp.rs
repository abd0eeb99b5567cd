//! UDP: send a datagram, then wait until the deadline. A reply is a success (timed); an ICMP
//! error (port or host unreachable, reported by the kernel on the connected socket as
//! ECONNREFUSED/EHOSTUNREACH) is a failure; silence until the deadline is a success, since
//! most UDP services do not answer an unknown payload. This is what OVN's native UDP health
//! check does too, and why a UDP probe always takes its full timeout when the backend is
//! quiet.

use std::time::Instant;

use socket2::{Protocol, Type};
use tokio::net::UdpSocket;

use super::{CheckResult, Prober, domain_of};
use crate::netns::Namespace;
use crate::target::{Target, UDP_PAYLOAD};

pub(super) async fn check(
    p: &Prober,
    t: &Target,
    ns: &Namespace,
    start: Instant,
    deadline: tokio::time::Instant,
) -> CheckResult {
    let addr = t.socket_addr();
    let s = p
        .socket(ns, domain_of(&addr), Type::DGRAM, Some(Protocol::UDP))
        .await?;
    let s = UdpSocket::from_std(std::net::UdpSocket::from(s))
        .map_err(|e| format!("UDP socket: {e}"))?;
    s.connect(addr)
        .await
        .map_err(|e| format!("UDP connect to {addr}: {e}"))?;
    s.send(UDP_PAYLOAD)
        .await
        .map_err(|e| format!("UDP send to {addr}: {e}"))?;
    let mut buf = [0u8; 512];
    match tokio::time::timeout_at(deadline, s.recv(&mut buf)).await {
        Ok(Ok(_)) => Ok(Some(start.elapsed())),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(format!(
            "UDP {addr}: ICMP port unreachable (nothing listens)"
        )),
        Ok(Err(e)) => Err(format!("UDP {addr}: {e}")),
        Err(_) => Ok(None),
    }
}
