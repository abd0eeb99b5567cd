//! `ycloud-cnid`: the ycloud node daemon (see docs/cni.md). Run it in the node's network
//! namespace (a DaemonSet pod with hostNetwork), next to ovs-vswitchd.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ycloud_cni::annotation::StatusDirSource;
use ycloud_cni::daemon::{Daemon, DaemonConfig, Mode};

#[derive(Debug, Parser)]
#[command(
    name = "ycloud-cnid",
    about = "ycloud node daemon: plumbs pod interfaces for the ycloud-cni plugin"
)]
struct Args {
    /// Unix socket the plugin connects to (created 0600).
    #[arg(long, env = "YCLOUD_CNI_SOCKET", default_value = ycloud_cni::spec::DEFAULT_DAEMON_SOCKET)]
    socket: PathBuf,
    /// The node's Open_vSwitch database.
    #[arg(
        long,
        env = "YCLOUD_OVS_DB",
        default_value = "unix:/var/run/openvswitch/db.sock"
    )]
    ovs_db: String,
    /// The integration bridge.
    #[arg(long, env = "YCLOUD_BRIDGE", default_value = "br-int")]
    bridge: String,
    /// Manifest mode: the controller's status directory (`pods/<ns>/<name>.json`).
    #[arg(long, env = "YCLOUD_STATUS_DIR")]
    status_dir: PathBuf,
    /// This node's name.
    #[arg(long, env = "YCLOUD_NODE_NAME", default_value = "")]
    node_name: String,
    /// Milliseconds ADD waits for the pod annotation.
    #[arg(long, env = "YCLOUD_ANNOTATION_TIMEOUT_MS", default_value_t = 30_000)]
    annotation_timeout_ms: u64,
    /// Milliseconds ADD waits for ovn-installed; 0: answer without waiting.
    #[arg(
        long,
        env = "YCLOUD_OVN_INSTALLED_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    ovn_installed_timeout_ms: u64,
    /// Milliseconds between checks of the node's management ports; 0: don't manage them.
    #[arg(long, env = "YCLOUD_MGMT_INTERVAL_MS", default_value_t = 5_000)]
    mgmt_interval_ms: u64,
    #[arg(long, env = "YCLOUD_CNI_MODE", value_enum, default_value = "veth")]
    mode: Mode,
    /// smartnic mode: the sysfs root (a fake tree in tests).
    #[arg(long, env = "YCLOUD_SYSFS_ROOT", default_value = "/sys")]
    sysfs_root: PathBuf,
    /// smartnic mode: the PF to take VFs from (default: the first SR-IOV PF in switchdev mode).
    #[arg(long, env = "YCLOUD_PF")]
    pf: Option<String>,
    /// smartnic mode: Open_vSwitch other_config:tc-policy.
    #[arg(long, env = "YCLOUD_TC_POLICY")]
    tc_policy: Option<String>,
    /// Leave TX checksum offload on (only for a kernel datapath).
    #[arg(long, env = "YCLOUD_KEEP_TX_CHECKSUM")]
    keep_tx_checksum: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let cfg = DaemonConfig {
        socket: a.socket,
        ovs_db: a.ovs_db,
        bridge: a.bridge,
        // Management ports need a node name; the dpu modes exchange files in the status dir.
        node_status_dir: (!a.node_name.is_empty() || matches!(a.mode, Mode::DpuHost | Mode::Dpu))
            .then(|| a.status_dir.clone()),
        mgmt_interval: Duration::from_millis(a.mgmt_interval_ms),
        node_name: a.node_name,
        annotation_timeout: Duration::from_millis(a.annotation_timeout_ms),
        ovn_installed_timeout: Duration::from_millis(a.ovn_installed_timeout_ms),
        mode: a.mode,
        tx_checksum_off: !a.keep_tx_checksum,
        sysfs_root: a.sysfs_root,
        pf: a.pf,
        tc_policy: a.tc_policy,
    };
    let source = Arc::new(StatusDirSource { dir: a.status_dir });
    let daemon = Daemon::new(cfg, source).await?;
    tokio::select! {
        r = daemon.serve() => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
