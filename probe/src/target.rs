//! What one probe sends where: a [`Target`], built (and validated) from a `NetworkProbeSpec`
//! or a `HealthCheck` plus a backend address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ycloud_crds::{HealthCheck, NetworkProbeSpec, ProbeType, StatusRange};

use crate::error::ProbeError;

/// The payload of a UDP probe: short and recognisable in a packet capture.
pub const UDP_PAYLOAD: &[u8] = b"ycloud-probe\n";

/// The kind of check and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A TCP connect.
    Tcp,
    /// Send [`UDP_PAYLOAD`]; success on a reply or on silence until the timeout, failure on
    /// an ICMP error (port/host unreachable).
    Udp,
    /// `GET path` with `Host: host`; success when the status is in `expected`. `tls`: HTTPS
    /// (any certificate accepted).
    Http {
        tls: bool,
        path: String,
        host: String,
        expected: StatusRange,
    },
    /// An ICMP (or ICMPv6) echo request; success on the matching echo reply.
    Icmp,
}

/// One probe, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub check: Check,
    pub address: IpAddr,
    /// Always set except for ICMP.
    pub port: Option<u16>,
    /// A probe not finished within this is a failure (a slow backend is a failed backend).
    pub timeout: Duration,
}

impl Target {
    /// The target of `spec` (its backend address, its port, its health check). `what` names
    /// the probe in errors (e.g. `shop/checkout-10-0-1-15`).
    pub fn from_spec(what: &str, spec: &NetworkProbeSpec) -> Result<Target, ProbeError> {
        Self::new(
            what,
            &spec.probe,
            spec.backend.address,
            spec.backend.port.or(spec.probe.port),
        )
    }

    /// The target of health check `hc` against `address:port`.
    pub fn new(
        what: &str,
        hc: &HealthCheck,
        address: IpAddr,
        port: Option<u16>,
    ) -> Result<Target, ProbeError> {
        let invalid = |why: String| ProbeError::InvalidSpec {
            what: what.to_string(),
            why,
        };
        let need_port = |kind: &str| {
            port.filter(|p| *p != 0).ok_or_else(|| {
                invalid(format!(
                    "a {kind} probe needs a port (spec.backend.port or spec.probe.port)"
                ))
            })
        };
        if hc.timeout_millis == 0 {
            return Err(invalid("spec.probe.timeoutMillis must be > 0".into()));
        }
        let (check, port) = match hc.kind {
            ProbeType::TCP => (Check::Tcp, Some(need_port("TCP")?)),
            ProbeType::UDP => (Check::Udp, Some(need_port("UDP")?)),
            ProbeType::ICMP => (Check::Icmp, None),
            ProbeType::HTTP | ProbeType::HTTPS => {
                let tls = hc.kind == ProbeType::HTTPS;
                let port = need_port(if tls { "HTTPS" } else { "HTTP" })?;
                let path = hc.path.clone().unwrap_or_else(|| "/".into());
                // The request line and the Host header are written verbatim: anything that
                // could end them early would let a spec inject headers.
                if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return Err(invalid(format!(
                        "spec.probe.path {path:?} must start with '/' and contain no spaces or control characters"
                    )));
                }
                let host = match &hc.host {
                    Some(h) => {
                        if h.is_empty() || h.bytes().any(|b| b <= b' ' || b == 0x7f) {
                            return Err(invalid(format!(
                                "spec.probe.host {h:?} must be non-empty without spaces or control characters"
                            )));
                        }
                        h.clone()
                    }
                    None => default_host(address, port, tls),
                };
                let expected = hc.expected_status.unwrap_or_default();
                if expected.min > expected.max {
                    return Err(invalid(format!(
                        "spec.probe.expectedStatus: min {} > max {}",
                        expected.min, expected.max
                    )));
                }
                (
                    Check::Http {
                        tls,
                        path,
                        host,
                        expected,
                    },
                    Some(port),
                )
            }
        };
        Ok(Target {
            check,
            address,
            port,
            timeout: Duration::from_millis(u64::from(hc.timeout_millis)),
        })
    }

    /// `address:port` (port 0 for ICMP).
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port.unwrap_or(0))
    }
}

/// The `Host` header when the spec names none: the address (IPv6 in brackets), with the
/// port unless it is the scheme's default (what curl sends).
fn default_host(address: IpAddr, port: u16, tls: bool) -> String {
    let a = match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    if port == if tls { 443 } else { 80 } {
        a
    } else {
        format!("{a}:{port}")
    }
}

#[cfg(test)]
mod tests;
