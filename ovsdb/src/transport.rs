//! Remotes (`unix:PATH`, `tcp:HOST:PORT`, `ssl:HOST:PORT`, IPv6 as `tcp:[::1]:6641`) and
//! opening a byte stream to one, with rustls for `ssl:`.
//!
//! TLS verifies the server certificate against the CA file and the name in the remote: an IP
//! address must be in the certificate's IP SANs, a host name in its DNS SANs (rustls does not
//! accept a bare CN, so certificates need a subjectAltName).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Error;

/// Where an OVSDB server listens, in OVS `--remote` syntax (active forms only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Remote {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
    Ssl { host: String, port: u16 },
}

impl FromStr for Remote {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidRemote {
            remote: s.to_owned(),
            reason: reason.into(),
        };
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT"))?;
        match kind {
            "unix" if !rest.is_empty() => Ok(Remote::Unix(PathBuf::from(rest))),
            "unix" => Err(bad("empty socket path")),
            "tcp" | "ssl" => {
                let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
                    let (host, after) = v6
                        .split_once(']')
                        .ok_or_else(|| bad("IPv6 address without ']'"))?;
                    let port = after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("expected ':PORT' after the IPv6 address"))?;
                    (host, port)
                } else {
                    let (host, port) = rest
                        .rsplit_once(':')
                        .ok_or_else(|| bad("expected HOST:PORT"))?;
                    if host.contains(':') {
                        return Err(bad(
                            "IPv6 addresses must be written in brackets: [::1]:6641",
                        ));
                    }
                    (host, port)
                };
                if host.is_empty() {
                    return Err(bad("empty host"));
                }
                let port: u16 = port
                    .parse()
                    .map_err(|_| bad("port is not a number 1-65535"))?;
                if port == 0 {
                    return Err(bad("port 0 is not a connectable port"));
                }
                let host = host.to_owned();
                Ok(if kind == "tcp" {
                    Remote::Tcp { host, port }
                } else {
                    Remote::Ssl { host, port }
                })
            }
            _ => Err(bad("unknown scheme; expected unix:, tcp: or ssl:")),
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hostport = |f: &mut fmt::Formatter<'_>, kind: &str, host: &str, port: u16| {
            if host.contains(':') {
                write!(f, "{kind}:[{host}]:{port}")
            } else {
                write!(f, "{kind}:{host}:{port}")
            }
        };
        match self {
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
            Remote::Tcp { host, port } => hostport(f, "tcp", host, *port),
            Remote::Ssl { host, port } => hostport(f, "ssl", host, *port),
        }
    }
}

/// Files for `ssl:` remotes (the same three `ovsdb-server`/`ovn-nbctl` take).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM CA certificate(s) that signed the server certificate.
    pub ca_cert: PathBuf,
    /// PEM client certificate chain, when the server asks for one (ovsdb-server does).
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate`.
    pub private_key: Option<PathBuf>,
}

impl TlsConfig {
    /// Builds the rustls configuration, naming the file that is missing or malformed.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        let cfg_err =
            |what: String, e: Box<dyn std::error::Error + Send + Sync>| Error::TlsConfig {
                what,
                source: Some(e),
            };
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(&self.ca_cert)? {
            roots.add(cert).map_err(|e| {
                cfg_err(
                    format!("CA certificate {}", self.ca_cert.display()),
                    Box::new(e),
                )
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| cfg_err("protocol versions".into(), Box::new(e)))?
            .with_root_certificates(roots);
        let config = match (&self.certificate, &self.private_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| cfg_err(format!("private key {}", key.display()), Box::new(e)))?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    cfg_err(
                        format!("certificate {} with key {}", cert.display(), key.display()),
                        Box::new(e),
                    )
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::TlsConfig {
                    what: "certificate and private_key must be given together".into(),
                    source: None,
                });
            }
        };
        Ok(Arc::new(config))
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::TlsConfig {
            what: format!("reading certificates from {}", path.display()),
            source: Some(Box::new(e)),
        })?;
    if certs.is_empty() {
        return Err(Error::TlsConfig {
            what: format!("no PEM certificate in {}", path.display()),
            source: None,
        });
    }
    Ok(certs)
}

/// A connected byte stream of any transport.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

pub type BoxStream = Box<dyn Stream>;

/// Opens a stream to `remote` within `timeout`. `tls` is required for `ssl:` remotes.
pub async fn connect(
    remote: &Remote,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<BoxStream, Error> {
    let name = remote.to_string();
    let connect_err = |source| Error::Connect {
        remote: name.clone(),
        source,
    };
    let fut = async {
        match remote {
            Remote::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_err)?;
                Ok(Box::new(s) as BoxStream)
            }
            Remote::Tcp { host, port } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(connect_err)?;
                let _ = s.set_nodelay(true);
                Ok(Box::new(s) as BoxStream)
            }
            Remote::Ssl { host, port } => {
                let config = tls.ok_or_else(|| Error::TlsConfig {
                    what: format!("{name} needs a TLS configuration (CA, certificate, key)"),
                    source: None,
                })?;
                let server_name =
                    ServerName::try_from(host.clone()).map_err(|e| Error::InvalidRemote {
                        remote: name.clone(),
                        reason: e.to_string(),
                    })?;
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(connect_err)?;
                let _ = tcp.set_nodelay(true);
                let s = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(server_name, tcp)
                    .await
                    .map_err(connect_err)?;
                Ok(Box::new(s) as BoxStream)
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Connect {
            remote: name.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_of_every_kind_parse_and_print_back() {
        for (s, want) in [
            (
                "unix:/run/ovn/ovnnb_db.sock",
                Remote::Unix("/run/ovn/ovnnb_db.sock".into()),
            ),
            (
                "tcp:127.0.0.1:6641",
                Remote::Tcp {
                    host: "127.0.0.1".into(),
                    port: 6641,
                },
            ),
            (
                "tcp:[::1]:6641",
                Remote::Tcp {
                    host: "::1".into(),
                    port: 6641,
                },
            ),
            (
                "ssl:ovn-nb.example:6641",
                Remote::Ssl {
                    host: "ovn-nb.example".into(),
                    port: 6641,
                },
            ),
            (
                "ssl:[fd00::1]:6643",
                Remote::Ssl {
                    host: "fd00::1".into(),
                    port: 6643,
                },
            ),
        ] {
            let r: Remote = s.parse().unwrap();
            assert_eq!(r, want, "{s}");
            assert_eq!(r.to_string(), s);
        }
    }

    #[test]
    fn malformed_remotes_are_errors_that_say_what_is_wrong() {
        for (s, want) in [
            ("127.0.0.1:6641", "unknown scheme"),
            ("tcp:::1:6641", "brackets"),
            ("tcp:[::1:6641", "without ']'"),
            ("tcp:1.2.3.4", "expected HOST:PORT"),
            ("tcp:1.2.3.4:x", "port is not a number"),
            ("tcp:1.2.3.4:0", "port 0"),
            ("unix:", "empty socket path"),
            ("ptcp:6641", "unknown scheme"),
        ] {
            let err = s.parse::<Remote>().unwrap_err().to_string();
            assert!(err.contains(want) && err.contains(s), "{s}: {err}");
        }
    }

    #[test]
    fn a_missing_ca_file_is_an_error_naming_the_file() {
        let cfg = TlsConfig {
            ca_cert: "/nonexistent/ca.pem".into(),
            certificate: None,
            private_key: None,
        };
        let err = cfg.client_config().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
