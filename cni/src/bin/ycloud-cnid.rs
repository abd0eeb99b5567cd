//! `ycloud-cnid`: the ycloud node daemon (see docs/cni.md). Run it in the node's network
//! namespace (a DaemonSet pod with hostNetwork), next to ovs-vswitchd.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ycloud_cni::annotation::StatusDirSource;
use ycloud_cni::daemon::{Daemon, DaemonConfig, Mode, Sources};
use ycloud_cni::dpu::{Exchange, FileExchange};
use ycloud_cni::mgmt::NodeFileSource;

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
    /// Manifest mode: the controller's status directory (`pods/<ns>/<name>.json`). Without
    /// it: cluster mode (watches on the API server; in-cluster config or KUBECONFIG).
    #[arg(long, env = "YCLOUD_STATUS_DIR")]
    status_dir: Option<PathBuf>,
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
    /// Milliseconds between checks of the pods' ports and host veths (veth mode); 0: never.
    #[arg(long, env = "YCLOUD_PORT_CHECK_INTERVAL_MS", default_value_t = 10_000)]
    port_check_interval_ms: u64,
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
    /// Where the daemon keeps its own state (the pods' network namespaces, for probes:
    /// e.g. /var/lib/ycloud/cnid on a hostPath). Unset: kept in memory, so a restarted daemon
    /// probes a pod again only after its next ADD.
    #[arg(long, env = "YCLOUD_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// NetworkProbes of this node in flight at once; 0: run no probes.
    #[arg(long, env = "YCLOUD_PROBE_MAX_CONCURRENCY", default_value_t = 512)]
    probe_max_concurrency: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // RUST_LOG (full directives) wins; the chart sets YCLOUD_LOG_LEVEL (one level).
            tracing_subscriber::EnvFilter::try_from_default_env()
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("YCLOUD_LOG_LEVEL"))
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let dpu = matches!(a.mode, Mode::DpuHost | Mode::Dpu);
    let sources = match &a.status_dir {
        Some(dir) => Sources {
            pods: Arc::new(StatusDirSource { dir: dir.clone() }),
            // Management ports need a node name.
            node: (!a.node_name.is_empty()).then(|| {
                Arc::new(NodeFileSource {
                    dir: dir.clone(),
                    node: a.node_name.clone(),
                }) as Arc<dyn ycloud_cni::mgmt::NodeSource>
            }),
            exchange: dpu.then(|| Exchange::Files(FileExchange { dir: dir.clone() })),
        },
        None => cluster_sources(&a.node_name, dpu).await?,
    };
    let node_name = a.node_name.clone();
    let cfg = DaemonConfig {
        socket: a.socket,
        ovs_db: a.ovs_db,
        bridge: a.bridge,
        node_status_dir: a.status_dir.clone(),
        mgmt_interval: Duration::from_millis(a.mgmt_interval_ms),
        port_check_interval: Duration::from_millis(a.port_check_interval_ms),
        node_name: a.node_name,
        annotation_timeout: Duration::from_millis(a.annotation_timeout_ms),
        ovn_installed_timeout: Duration::from_millis(a.ovn_installed_timeout_ms),
        mode: a.mode,
        tx_checksum_off: !a.keep_tx_checksum,
        sysfs_root: a.sysfs_root,
        pf: a.pf,
        tc_policy: a.tc_policy,
    };
    // Probes: manifest mode reads S/probes and writes S/probe-status; cluster mode watches
    // this node's NetworkProbes and applies their status.
    let probes = match (node_name.is_empty(), a.probe_max_concurrency) {
        (false, n) if n > 0 => Some((
            n,
            Arc::new(match &a.state_dir {
                Some(d) => ycloud_cni::probes::PodNetnsStore::open(d)?,
                None => ycloud_cni::probes::PodNetnsStore::in_memory(),
            }),
        )),
        _ => None,
    };
    let status_dir = a.status_dir.clone();
    let daemon = Daemon::new(cfg, sources).await?;
    if let Some((n, store)) = probes {
        daemon.set_pod_netns_store(store.clone());
        match status_dir {
            Some(dir) => {
                let runner_cfg = ycloud_cni::probes::RunnerConfig::new(dir, node_name.clone(), n);
                let (runner, reports) = ycloud_cni::probes::Runner::new(runner_cfg, store);
                tokio::spawn(runner.run(reports));
            }
            None => cluster_probes(&node_name, n, store).await?,
        }
    }
    tokio::select! {
        r = daemon.serve() => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// Cluster mode: the pod watch (and the Node watch, the dpu exchange) on the API server.
#[cfg(feature = "kube")]
async fn cluster_sources(node: &str, dpu: bool) -> anyhow::Result<Sources> {
    use ycloud_cni::kube::{self as k, KubeExchange, NodeAnnotationSource, PodSource};
    anyhow::ensure!(
        !node.is_empty(),
        "cluster mode (no --status-dir) needs --node-name: the daemon watches that node's pods"
    );
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("cluster mode (no --status-dir): no Kubernetes client configuration (in-cluster or KUBECONFIG): {e}")
    })?;
    let pods = k::watch_pods(client.clone(), node);
    Ok(Sources {
        pods: Arc::new(PodSource { pods: pods.clone() }),
        node: Some(Arc::new(NodeAnnotationSource {
            node: node.to_string(),
            cache: k::watch_node(client.clone(), node),
        })),
        exchange: dpu.then(|| Exchange::Kube(KubeExchange { client, pods })),
    })
}

/// Cluster mode: the runner of this node's NetworkProbes (watch by label, status by apply).
#[cfg(feature = "kube")]
async fn cluster_probes(
    node: &str,
    max_concurrency: usize,
    store: Arc<ycloud_cni::probes::PodNetnsStore>,
) -> anyhow::Result<()> {
    use ycloud_cni::probes::cluster::{ClusterConfig, ClusterRunner};
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("cluster mode (no --status-dir): no Kubernetes client configuration for the probe runner: {e}")
    })?;
    let runner = ClusterRunner::new(
        ClusterConfig::new(node.to_string(), max_concurrency),
        client,
        store,
    );
    tokio::spawn(runner.run());
    Ok(())
}

/// Without the `kube` feature cluster mode stops earlier ([`cluster_sources`]).
#[cfg(not(feature = "kube"))]
async fn cluster_probes(
    _node: &str,
    _max_concurrency: usize,
    _store: Arc<ycloud_cni::probes::PodNetnsStore>,
) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(not(feature = "kube"))]
async fn cluster_sources(_node: &str, _dpu: bool) -> anyhow::Result<Sources> {
    anyhow::bail!(
        "no --status-dir: cluster mode needs a ycloud-cnid built with the `kube` feature (cargo build --features kube); pass --status-dir for manifest mode"
    )
}
