//! HTTP and HTTPS: `GET path HTTP/1.1` with `Host` and `Connection: close`; the status line
//! decides. A hand-written request (a dozen lines) instead of an HTTP client crate: a probe
//! needs neither redirects, nor bodies, nor pooling, and this keeps the daemon small.
//!
//! HTTPS accepts any certificate: backends are probed by IP address from inside their own
//! namespace, where no certificate could name them (and a pod's certificate is for its
//! service's name, issued by a CA the node does not know). What a probe checks is that the
//! backend completes a TLS handshake and answers with a good status, like kubelet's HTTPS
//! probes, which skip verification too. The handshake's signatures are still verified (the
//! peer must hold the key of the certificate it shows).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{CheckResult, Prober, tcp};
use crate::netns::Namespace;
use crate::target::{Check, Target};

/// The longest status line we read before giving up on the answer.
const MAX_STATUS_LINE: usize = 1024;

pub(super) async fn check(p: &Prober, t: &Target, ns: &Namespace, start: Instant) -> CheckResult {
    let Check::Http {
        tls,
        path,
        host,
        expected,
    } = &t.check
    else {
        return Err("not an HTTP target".into());
    };
    let stream = tcp::connect(p, t, ns, false).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ycloud-probe/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let status = if *tls {
        let name = server_name(host, t.address);
        let tls_stream = tokio_rustls::TlsConnector::from(client_config())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake with {}: {e}", t.socket_addr()))?;
        exchange(tls_stream, &request).await
    } else {
        exchange(stream, &request).await
    }
    .map_err(|e| format!("HTTP GET {path} at {}: {e}", t.socket_addr()))?;
    let latency = start.elapsed();
    if (expected.min..=expected.max).contains(&status) {
        Ok(Some(latency))
    } else {
        Err(format!(
            "HTTP GET {path} at {}: status {status}, expected {}..={}",
            t.socket_addr(),
            expected.min,
            expected.max
        ))
    }
}

/// Sends the request and reads the status code of the answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
) -> Result<u16, String> {
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    s.flush()
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&buf[..end]);
        }
        if buf.len() > MAX_STATUS_LINE {
            return Err(format!(
                "no status line in the first {MAX_STATUS_LINE} bytes"
            ));
        }
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                "connection closed without an answer".into()
            } else {
                format!(
                    "connection closed inside the status line {:?}",
                    String::from_utf8_lossy(&buf)
                )
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.x NNN reason` → NNN.
pub(crate) fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split(' ');
    let (Some(version), Some(code)) = (words.next(), words.next()) else {
        return Err(format!("bad status line {text:?}"));
    };
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(format!("bad status line {text:?}"));
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..=599).contains(c))
        .ok_or_else(|| format!("bad status code in {text:?}"))
}

/// SNI: the Host header's name when it is one, else the address (rustls sends no SNI for
/// an IP address).
fn server_name(host: &str, address: IpAddr) -> ServerName<'static> {
    let bare = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    if bare.parse::<IpAddr>().is_err()
        && let Ok(name) = ServerName::try_from(bare.to_string())
    {
        return name;
    }
    ServerName::IpAddress(address.into())
}

fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Accepts any server certificate (see the module doc for why); checks handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse_to_their_code() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable"),
            Ok(503)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204"), Ok(204));
        assert!(parse_status_line(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_status_line(b"HTTP/1.1 2000 OK").is_err());
        assert!(parse_status_line(b"HTTP/1.1 099 x").is_err());
    }

    #[test]
    fn sni_is_the_host_name_without_port_and_never_an_address() {
        let a: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            server_name("shop.example:8443", a),
            ServerName::try_from("shop.example").unwrap()
        );
        assert_eq!(
            server_name("10.0.0.5:8443", a),
            ServerName::IpAddress(a.into())
        );
        assert_eq!(
            server_name("[fd00::1]:8443", a),
            ServerName::IpAddress(a.into())
        );
    }
}
