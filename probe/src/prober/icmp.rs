//! ICMP: an echo request on a raw socket (the daemon runs as root; unprivileged "ping"
//! sockets depend on `net.ipv4.ping_group_range` of the *pod's* namespace, which is not
//! ours to set), connected to the target so the kernel only hands us its packets, and the
//! matching echo reply (our identifier and sequence number). Every raw ICMP socket of a
//! namespace sees every ICMP packet, hence the matching.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use socket2::{Protocol, Type};
use tokio::net::UdpSocket;

use super::{CheckResult, Prober, domain_of};
use crate::netns::Namespace;
use crate::target::Target;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const PAYLOAD: &[u8] = b"ycloud-probe-icmp";

/// Identifier (high 16 bits) and sequence (low 16) of the next echo: unique per process
/// for 4 billion probes, seeded by the pid so two probers on one host differ.
static NEXT: AtomicU32 = AtomicU32::new(0);

pub(super) async fn check(p: &Prober, t: &Target, ns: &Namespace, start: Instant) -> CheckResult {
    let addr = t.socket_addr();
    let v6 = addr.is_ipv6();
    let proto = if v6 {
        Protocol::ICMPV6
    } else {
        Protocol::ICMPV4
    };
    let s = p
        .socket(ns, domain_of(&addr), Type::RAW, Some(proto))
        .await?;
    s.connect(&addr.into())
        .map_err(|e| format!("ICMP connect to {}: {e}", t.address))?;
    let n = NEXT
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(std::process::id().wrapping_mul(0x9E37_79B9));
    let (id, seq) = ((n >> 16) as u16, n as u16);
    let packet = echo_request(v6, id, seq);
    // tokio's UdpSocket drives any datagram socket through send(2)/recv(2): a raw ICMP
    // socket works the same, and this needs neither `unsafe` nor tokio's deprecated
    // AsyncFd constructors.
    let s = UdpSocket::from_std(std::net::UdpSocket::from(s))
        .map_err(|e| format!("ICMP socket: {e}"))?;
    s.send(&packet)
        .await
        .map_err(|e| format!("ICMP echo to {}: {e}", t.address))?;
    let mut buf = [0u8; 1500];
    loop {
        let n = s
            .recv(&mut buf)
            .await
            .map_err(|e| format!("ICMP echo to {}: {e}", t.address))?;
        if is_our_reply(v6, &buf[..n], id, seq) {
            return Ok(Some(start.elapsed()));
        }
    }
}

/// An echo request. IPv4 needs our checksum; for ICMPv6 the kernel computes it (it covers
/// a pseudo-header only the kernel knows the source of).
fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(PAYLOAD);
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// Whether `packet` (IPv4: with its IP header, as raw sockets deliver it; IPv6: without) is
/// the echo reply to (`id`, `seq`).
fn is_our_reply(v6: bool, packet: &[u8], id: u16, seq: u16) -> bool {
    let icmp = if v6 {
        packet
    } else {
        let Some(first) = packet.first() else {
            return false;
        };
        let ihl = usize::from(first & 0x0f) * 4;
        match packet.get(ihl..) {
            Some(rest) => rest,
            None => return false,
        }
    };
    icmp.len() >= 8
        && icmp[0] == if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 }
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_checksums_to_zero_when_verified() {
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to 0");
        assert_eq!(p[0], ECHO_REQUEST_V4);
    }

    #[test]
    fn only_the_reply_with_our_id_and_sequence_matches() {
        // IPv4 header of 20 bytes, then the reply.
        let mut pkt = vec![0x45u8];
        pkt.extend_from_slice(&[0; 19]);
        pkt.extend_from_slice(&[ECHO_REPLY_V4, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert!(is_our_reply(false, &pkt, 0x1234, 7));
        assert!(!is_our_reply(false, &pkt, 0x1234, 8));
        assert!(!is_our_reply(false, &pkt, 0x1235, 7));
        assert!(!is_our_reply(false, &pkt[..22], 0x1234, 7));
        let v6 = [ECHO_REPLY_V6, 0, 0, 0, 0x12, 0x34, 0, 7];
        assert!(is_our_reply(true, &v6, 0x1234, 7));
    }
}
