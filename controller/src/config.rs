//! Command-line flags (each also settable by an environment variable).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use ycloud_ovsdb::transport::TlsConfig;

use crate::compiler::topology::DatapathMode;
use crate::reconcile::Options;
use crate::resolve;

/// Why the flags can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--source {0:?}: expected dir:PATH (the Kubernetes source is not built yet)")]
    Source(String),
    #[error("--svcgw-chassis {0:?}: expected NAME or NAME:PRIORITY (priority 0..32767)")]
    Chassis(String),
    #[error("--nb: at least one remote (unix:PATH, tcp:HOST:PORT, ssl:HOST:PORT) is needed")]
    NoRemote,
    #[error(
        "--nb: an ssl: remote needs --nb-ca-cert (and usually --nb-certificate and --nb-private-key)"
    )]
    NoCaCert,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `ycloud-controller`: programs OVN from ycloud's objects.
#[derive(Debug, Clone, Parser)]
#[command(name = "ycloud-controller", version)]
pub struct Args {
    /// Where the objects come from: `dir:PATH` reads every *.yaml in PATH and follows changes.
    #[arg(long, env = "YCLOUD_SOURCE")]
    pub source: String,
    /// OVN_Northbound remotes, comma-separated (every member of a RAFT cluster).
    #[arg(long, env = "YCLOUD_NB", value_delimiter = ',')]
    pub nb: Vec<String>,
    /// PEM CA certificate for `ssl:` NB remotes.
    #[arg(long, env = "YCLOUD_NB_CA_CERT")]
    pub nb_ca_cert: Option<PathBuf>,
    /// PEM client certificate for `ssl:` NB remotes.
    #[arg(long, env = "YCLOUD_NB_CERTIFICATE")]
    pub nb_certificate: Option<PathBuf>,
    /// PEM private key of `--nb-certificate`.
    #[arg(long, env = "YCLOUD_NB_PRIVATE_KEY")]
    pub nb_private_key: Option<PathBuf>,
    /// Offload mode: every load balancer gets selection_fields (no dp_hash in the datapath).
    #[arg(long, env = "YCLOUD_OFFLOAD")]
    pub offload: bool,
    /// Status directory (manifest mode). Default: PATH/.status.
    #[arg(long, env = "YCLOUD_STATUS_DIR")]
    pub status_dir: Option<PathBuf>,
    /// How often the source directory is checked for changes, in milliseconds.
    #[arg(long, env = "YCLOUD_POLL_MS", default_value_t = 500)]
    pub poll_ms: u64,
    /// A full reconcile at least this often, in seconds.
    #[arg(long, env = "YCLOUD_RESYNC_SECS", default_value_t = 60)]
    pub resync_secs: u64,
    /// Service-gateway chassis, `NAME[:PRIORITY]`, repeatable (needed for CrossVPC services).
    #[arg(long, env = "YCLOUD_SVCGW_CHASSIS", value_delimiter = ',')]
    pub svcgw_chassis: Vec<String>,
    /// Pool of the service gateway's per-VPC transit networks (/29 each).
    #[arg(long, env = "YCLOUD_SVCGW_POOL", default_value = "100.66.0.0/16")]
    pub svcgw_pool: IpNet,
    /// Pool of the EIP gateways' transit networks (/24 each).
    #[arg(long, env = "YCLOUD_EIP_TRANSIT_POOL", default_value = "100.67.0.0/16")]
    pub eip_transit_pool: IpNet,
    /// Underlay MTU; pods get it minus the Geneve overhead (58) unless their Subnet says.
    #[arg(long, env = "YCLOUD_UNDERLAY_MTU", default_value_t = 1500)]
    pub underlay_mtu: u32,
    /// Log format.
    #[arg(long, env = "YCLOUD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Serve /healthz, /readyz and /metrics here (e.g. 127.0.0.1:9090). Off when unset.
    #[arg(long, env = "YCLOUD_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Args {
    /// The reconcile loop's options.
    pub fn options(&self) -> Result<Options, ConfigError> {
        let dir = self
            .source
            .strip_prefix("dir:")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ConfigError::Source(self.source.clone()))?;
        let source_dir = PathBuf::from(dir);
        let nb_remotes: Vec<String> = self.nb.iter().filter(|r| !r.is_empty()).cloned().collect();
        if nb_remotes.is_empty() {
            return Err(ConfigError::NoRemote);
        }
        let tls = match &self.nb_ca_cert {
            Some(ca) => Some(TlsConfig {
                ca_cert: ca.clone(),
                certificate: self.nb_certificate.clone(),
                private_key: self.nb_private_key.clone(),
            }),
            None if nb_remotes.iter().any(|r| r.starts_with("ssl:")) => {
                return Err(ConfigError::NoCaCert);
            }
            None => None,
        };
        let mut chassis = BTreeMap::new();
        for c in &self.svcgw_chassis {
            let (name, prio) = match c.split_once(':') {
                Some((n, p)) => (
                    n,
                    p.parse::<u16>()
                        .ok()
                        .filter(|p| *p <= 32767)
                        .ok_or_else(|| ConfigError::Chassis(c.clone()))?,
                ),
                None => (c.as_str(), 100),
            };
            if name.is_empty() {
                return Err(ConfigError::Chassis(c.clone()));
            }
            chassis.insert(name.to_owned(), prio);
        }
        Ok(Options {
            status_dir: self
                .status_dir
                .clone()
                .unwrap_or_else(|| source_dir.join(".status")),
            source_dir,
            nb_remotes,
            nb_tls: tls,
            resolve: resolve::Config {
                mode: if self.offload {
                    DatapathMode::Offload
                } else {
                    DatapathMode::Default
                },
                eip_transit_pool: self.eip_transit_pool,
                svcgw_pool: self.svcgw_pool,
                svcgw_chassis: chassis,
                underlay_mtu: self.underlay_mtu,
            },
            poll: Duration::from_millis(self.poll_ms.max(10)),
            resync: Duration::from_secs(self.resync_secs.max(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Options, ConfigError> {
        let mut argv = vec!["ycloud-controller"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("parse").options()
    }

    #[test]
    fn a_dir_source_defaults_its_status_dir_inside_it() {
        let o = args(&[
            "--source",
            "dir:/m",
            "--nb",
            "unix:/nb.sock",
            "--svcgw-chassis",
            "node-1:7,node-2",
        ])
        .expect("ok");
        assert_eq!(o.status_dir, PathBuf::from("/m/.status"));
        assert_eq!(o.resolve.svcgw_chassis["node-1"], 7);
        assert_eq!(o.resolve.svcgw_chassis["node-2"], 100);
        assert_eq!(o.resolve.mode, DatapathMode::Default);
    }

    #[test]
    fn bad_flags_are_errors_that_name_the_flag() {
        let e = args(&["--source", "kube", "--nb", "unix:/x"]).expect_err("kube");
        assert!(e.to_string().starts_with("--source \"kube\""), "{e}");
        let e = args(&["--source", "dir:/m"]).expect_err("no nb");
        assert_eq!(e, ConfigError::NoRemote);
        let e = args(&["--source", "dir:/m", "--nb", "ssl:127.0.0.1:6641"]).expect_err("no CA");
        assert_eq!(e, ConfigError::NoCaCert);
        let e = args(&[
            "--source",
            "dir:/m",
            "--nb",
            "unix:/x",
            "--svcgw-chassis",
            "n:99999",
        ])
        .expect_err("prio");
        assert!(e.to_string().contains("--svcgw-chassis"), "{e}");
    }
}
