//! Command-line flags (each also settable by an environment variable).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use ycloud_ovsdb::transport::TlsConfig;

use crate::compiler::gateways::BfdTimers;
use crate::compiler::topology::DatapathMode;
use crate::reconcile::Options;
use crate::resolve;

/// Why the flags can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--source {0:?}: expected dir:PATH or kube")]
    Source(String),
    #[error("--source kube: this binary was built without the `kube` feature")]
    NoKubeFeature,
    #[error(
        "leader election: need retry period ({retry_ms} ms) < --renew-deadline-secs ({renew}) < --lease-duration-secs ({lease})"
    )]
    LeaseTimes {
        retry_ms: u64,
        renew: u64,
        lease: u64,
    },
    #[error("--svcgw-chassis {0:?}: expected NAME or NAME:PRIORITY (priority 0..32767)")]
    Chassis(String),
    #[error("--ovn-sb: an ssl: remote needs --nb-ca-cert (SB uses the NB TLS files)")]
    NoSbCaCert,
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
    /// Where the objects come from: `dir:PATH` reads every *.yaml in PATH and follows
    /// changes; `kube` watches the API server (in-cluster config or KUBECONFIG).
    #[arg(long, env = "YCLOUD_SOURCE")]
    pub source: String,
    /// OVN_Northbound remotes, comma-separated (every member of a RAFT cluster).
    #[arg(long, env = "YCLOUD_NB", value_delimiter = ',')]
    pub nb: Vec<String>,
    /// OVN_Southbound remotes, comma-separated, read only: the controller watches which
    /// chassis OVN elects for the service gateway's beacon port and pins the service
    /// gateway there (failover). Unset: no SB connection, and the service gateway stays
    /// pinned to the top `--svcgw-chassis`. `ssl:` remotes use the `--nb-*` TLS files.
    #[arg(long = "ovn-sb", env = "YCLOUD_OVN_SB", value_delimiter = ',')]
    pub ovn_sb: Vec<String>,
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
    /// A full pass that inserts at least this many load balancers (a cold start) keeps
    /// their echo out of the NB cache's monitor until the write is committed; 0: never.
    #[arg(long, env = "YCLOUD_DEFER_ECHO_MIN", default_value_t = crate::reconcile::DEFER_ECHO_MIN)]
    pub defer_echo_min: usize,
    /// A full pass sends its services' rows in NB transactions of this many services,
    /// each sent while the next is planned; 0: all in one transaction.
    #[arg(long, env = "YCLOUD_SERVICES_PER_TRANSACTION", default_value_t = crate::reconcile::SERVICES_PER_TRANSACTION)]
    pub services_per_transaction: usize,
    /// Service-gateway chassis, `NAME[:PRIORITY]`, repeatable (needed for CrossVPC services).
    #[arg(long, env = "YCLOUD_SVCGW_CHASSIS", value_delimiter = ',')]
    pub svcgw_chassis: Vec<String>,
    /// Pool of the service gateway's per-VPC transit networks (/29 each).
    #[arg(long, env = "YCLOUD_SVCGW_POOL", default_value = "100.66.0.0/16")]
    pub svcgw_pool: IpNet,
    /// Pool of the EIP gateways' transit networks (/24 each).
    #[arg(long, env = "YCLOUD_EIP_TRANSIT_POOL", default_value = "100.67.0.0/16")]
    pub eip_transit_pool: IpNet,
    /// BFD `min_rx` of the gateway chassis' sessions, in ms (`NB_Global
    /// options:bfd-min-rx`). With the two below it bounds how fast a dead gateway chassis
    /// is noticed: detection = max(min-rx, min-tx) x mult. Unset: NB_Global's key is left
    /// alone (OVN's default is 1000 ms).
    #[arg(long, env = "YCLOUD_BFD_MIN_RX_MS", value_parser = clap::value_parser!(u32).range(1..))]
    pub bfd_min_rx_ms: Option<u32>,
    /// BFD `min_tx`, in ms (`NB_Global options:bfd-min-tx`). Unset: left alone.
    #[arg(long, env = "YCLOUD_BFD_MIN_TX_MS", value_parser = clap::value_parser!(u32).range(1..))]
    pub bfd_min_tx_ms: Option<u32>,
    /// BFD detection multiplier (`NB_Global options:bfd-mult`), 1..255. Unset: left alone
    /// (OVN's default is 3).
    #[arg(long, env = "YCLOUD_BFD_MULT", value_parser = clap::value_parser!(u8).range(1..))]
    pub bfd_mult: Option<u8>,
    /// Underlay MTU; pods get it minus the Geneve overhead (58) unless their Subnet says.
    #[arg(long, env = "YCLOUD_UNDERLAY_MTU", default_value_t = 1500)]
    pub underlay_mtu: u32,
    /// Log format.
    #[arg(long, env = "YCLOUD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Serve /healthz, /readyz and /metrics here (e.g. 127.0.0.1:9090). Off when unset.
    #[arg(long, env = "YCLOUD_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Cluster mode: only the holder of the Lease writes (run 2 replicas). `false` for a
    /// single replica.
    #[arg(long, env = "YCLOUD_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the Lease. Default: $POD_NAMESPACE, else the client's namespace.
    #[arg(long, env = "YCLOUD_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, env = "YCLOUD_LEASE_NAME", default_value = "ycloud-controller")]
    pub lease_name: String,
    /// This replica's name (Lease holder, events). Default: $POD_NAME, else $HOSTNAME.
    #[arg(long, env = "YCLOUD_IDENTITY")]
    pub identity: Option<String>,
    /// A Lease not renewed for this long may be taken over.
    #[arg(long, env = "YCLOUD_LEASE_DURATION_SECS", default_value_t = 15)]
    pub lease_duration_secs: u64,
    /// The leader stops writing when it could not renew for this long (< lease duration).
    #[arg(long, env = "YCLOUD_RENEW_DEADLINE_SECS", default_value_t = 10)]
    pub renew_deadline_secs: u64,
    /// How often the Lease is renewed, or its takeover tried.
    #[arg(long, env = "YCLOUD_LEASE_RETRY_MS", default_value_t = 2000)]
    pub lease_retry_ms: u64,
    /// How often to look for KubeVirt's VirtualMachineInstance CRD until it is found.
    #[arg(long, env = "YCLOUD_CRD_CHECK_SECS", default_value_t = 60)]
    pub crd_check_secs: u64,
}

/// The default identity: `$POD_NAME`, else `$HOSTNAME`, else one from the process id.
#[cfg(feature = "kube")]
fn default_identity() -> String {
    ["POD_NAME", "HOSTNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("ycloud-controller-{}", std::process::id()))
}

impl Args {
    /// Whether `--source kube` (cluster mode).
    pub fn is_kube(&self) -> bool {
        self.source == "kube"
    }

    /// Cluster mode's options: `None` in manifest mode.
    #[cfg(feature = "kube")]
    pub fn kube_options(&self) -> Result<Option<crate::kube::KubeOptions>, ConfigError> {
        if !self.is_kube() {
            return Ok(None);
        }
        let identity = self
            .identity
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(default_identity);
        let lease = if self.leader_election {
            let (retry_ms, renew, lease) = (
                self.lease_retry_ms,
                self.renew_deadline_secs,
                self.lease_duration_secs,
            );
            if retry_ms == 0 || retry_ms >= renew * 1000 || renew >= lease {
                return Err(ConfigError::LeaseTimes {
                    retry_ms,
                    renew,
                    lease,
                });
            }
            Some(crate::kube::lease::LeaseConfig {
                // Filled from $POD_NAMESPACE or the client's namespace when empty.
                namespace: self
                    .lease_namespace
                    .clone()
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .unwrap_or_default(),
                name: self.lease_name.clone(),
                identity: identity.clone(),
                lease_duration: Duration::from_secs(lease),
                renew_deadline: Duration::from_secs(renew),
                retry_period: Duration::from_millis(retry_ms),
            })
        } else {
            None
        };
        Ok(Some(crate::kube::KubeOptions {
            lease,
            identity,
            crd_check: Duration::from_secs(self.crd_check_secs.max(1)),
        }))
    }

    /// The reconcile loop's options.
    pub fn options(&self) -> Result<Options, ConfigError> {
        let source_dir = if self.is_kube() {
            if !cfg!(feature = "kube") {
                return Err(ConfigError::NoKubeFeature);
            }
            PathBuf::new()
        } else {
            let dir = self
                .source
                .strip_prefix("dir:")
                .filter(|p| !p.is_empty())
                .ok_or_else(|| ConfigError::Source(self.source.clone()))?;
            PathBuf::from(dir)
        };
        let nb_remotes: Vec<String> = self.nb.iter().filter(|r| !r.is_empty()).cloned().collect();
        if nb_remotes.is_empty() {
            return Err(ConfigError::NoRemote);
        }
        // The chart's ConfigMap names the TLS files YCLOUD_NB_CA/CERT/KEY (the interface
        // agreed in docs/install.md): accepted too, the flags win.
        let agreed = |var: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let ca_cert = self.nb_ca_cert.clone().or_else(|| agreed("YCLOUD_NB_CA"));
        let tls = match &ca_cert {
            Some(ca) => Some(TlsConfig {
                ca_cert: ca.clone(),
                certificate: self
                    .nb_certificate
                    .clone()
                    .or_else(|| agreed("YCLOUD_NB_CERT")),
                private_key: self
                    .nb_private_key
                    .clone()
                    .or_else(|| agreed("YCLOUD_NB_KEY")),
            }),
            None if nb_remotes.iter().any(|r| r.starts_with("ssl:")) => {
                return Err(ConfigError::NoCaCert);
            }
            None => None,
        };
        let sb_remotes: Vec<String> = self
            .ovn_sb
            .iter()
            .filter(|r| !r.is_empty())
            .cloned()
            .collect();
        if tls.is_none() && sb_remotes.iter().any(|r| r.starts_with("ssl:")) {
            return Err(ConfigError::NoSbCaCert);
        }
        let svcgw_failover = !sb_remotes.is_empty();
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
            // Cluster mode: status goes to the API server; no directory unless asked.
            status_dir: self.status_dir.clone().unwrap_or_else(|| {
                if self.is_kube() {
                    PathBuf::new()
                } else {
                    source_dir.join(".status")
                }
            }),
            source_dir,
            nb_remotes,
            nb_tls: tls,
            sb_remotes,
            resolve: resolve::Config {
                mode: if self.offload {
                    DatapathMode::Offload
                } else {
                    DatapathMode::Default
                },
                eip_transit_pool: self.eip_transit_pool,
                svcgw_pool: self.svcgw_pool,
                svcgw_chassis: chassis,
                svcgw_failover,
                svcgw_elected: None,
                underlay_mtu: self.underlay_mtu,
                eipgw_demotions: BTreeMap::new(),
                svcgw_demotion: None,
            },
            poll: Duration::from_millis(self.poll_ms.max(10)),
            resync: Duration::from_secs(self.resync_secs.max(1)),
            defer_echo_min: match self.defer_echo_min {
                0 => usize::MAX,
                n => n,
            },
            services_per_transaction: match self.services_per_transaction {
                0 => usize::MAX,
                n => n,
            },
            bfd: BfdTimers {
                min_rx_ms: self.bfd_min_rx_ms,
                min_tx_ms: self.bfd_min_tx_ms,
                mult: self.bfd_mult,
            },
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
        let e = args(&["--source", "cluster", "--nb", "unix:/x"]).expect_err("cluster");
        assert!(e.to_string().starts_with("--source \"cluster\""), "{e}");
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

    #[test]
    fn bfd_timers_come_from_flags_and_unset_ones_stay_unset() {
        let o = args(&["--source", "dir:/m", "--nb", "unix:/x"]).expect("ok");
        assert_eq!(
            o.bfd,
            BfdTimers::default(),
            "no flag: NB_Global is left alone"
        );
        let o = args(&[
            "--source",
            "dir:/m",
            "--nb",
            "unix:/x",
            "--bfd-min-rx-ms",
            "100",
            "--bfd-mult",
            "5",
        ])
        .expect("ok");
        assert_eq!(
            o.bfd,
            BfdTimers {
                min_rx_ms: Some(100),
                min_tx_ms: None,
                mult: Some(5),
            }
        );
        for (flag, bad) in [
            ("--bfd-min-rx-ms", "0"),
            ("--bfd-min-tx-ms", "-1"),
            ("--bfd-mult", "0"),
            ("--bfd-mult", "256"),
            ("--bfd-min-tx-ms", "fast"),
        ] {
            let arg = format!("{flag}={bad}");
            let e = Args::try_parse_from(["ycloud-controller", "--source", "dir:/m", &arg])
                .expect_err(bad);
            assert!(e.to_string().contains(flag), "{flag} {bad}: {e}");
        }
    }

    #[cfg(feature = "kube")]
    #[test]
    fn the_kube_source_takes_its_lease_settings_from_flags_and_checks_their_order() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["ycloud-controller", "--source", "kube", "--nb", "unix:/x"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).expect("parse")
        };
        let a = parse(&[
            "--lease-namespace",
            "ycloud",
            "--identity",
            "ctl-0",
            "--lease-duration-secs",
            "6",
            "--renew-deadline-secs",
            "4",
            "--lease-retry-ms",
            "500",
        ]);
        assert!(
            a.options()
                .expect("options")
                .source_dir
                .as_os_str()
                .is_empty()
        );
        let k = a.kube_options().expect("ok").expect("kube mode");
        let lease = k.lease.expect("leader election is on by default");
        assert_eq!(lease.namespace, "ycloud");
        assert_eq!(lease.name, "ycloud-controller");
        assert_eq!(lease.identity, "ctl-0");
        assert_eq!(lease.renew_deadline, Duration::from_secs(4));
        let e = parse(&["--renew-deadline-secs", "20"])
            .kube_options()
            .expect_err("renew deadline past the lease duration");
        assert!(matches!(e, ConfigError::LeaseTimes { .. }), "{e}");
        let k = parse(&["--leader-election", "false"])
            .kube_options()
            .expect("ok")
            .expect("kube");
        assert!(k.lease.is_none());
    }
}
