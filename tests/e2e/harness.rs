//! The end-to-end harness: the real product on a real OVN sandbox.
//!
//! A [`Cluster`] is one `hack/ovn-sandbox.sh` sandbox (NB, SB, northd, OVS on the userspace
//! datapath, ovn-controller), `ycloud-controller` in manifest mode on a temp directory,
//! `ycloud-cnid` in the sandbox's node namespace (as a hostNetwork DaemonSet pod runs), and
//! "pods": network namespaces whose network the real `ycloud-cni` plugin builds, called the
//! way a container runtime calls it. Nothing is faked; `hack/demo.sh` does the same in shell.
//!
//! With [`Layout::nodes`] > 1 ([`Cluster::start_on`]) the sandbox has that many chassis, each
//! in a netns of its own, joined over Geneve; there is still ONE controller, and ONE
//! `ycloud-cnid` per node, started as a DaemonSet pod would be: inside that node's netns,
//! against that node's OVS database, `--node-name` = its chassis name, with a socket of its
//! own. Every node is a `Node` object in the manifests (so each gets a management port), and
//! [`Cluster::add_pod_on`] runs the plugin against the chosen node's daemon.
//!
//! Every process and namespace is stopped or deleted by a guard, also when a test panics;
//! then the controller's and the daemons' log tails, the NB rows and (several nodes) every
//! node's tunnel flows are printed.

// Included by several test binaries (`e2e`, `e2e_multinode`), each using a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use ycloud_testsupport::netns::{Background, Netns};
use ycloud_testsupport::sandbox::{OutsideSpec, Pod, Sandbox, SandboxOptions};

/// One HTTP request's bound: a request through a working path answers in milliseconds.
pub const HTTP: Duration = Duration::from_secs(2);

/// The binaries under test.
#[derive(Debug)]
pub struct Bins {
    pub controller: PathBuf,
    pub ycloudctl: PathBuf,
    pub cni: PathBuf,
    pub cnid: PathBuf,
}

/// The repository root (this file is `tests/e2e/harness.rs`, the crate is `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The product's binaries, built once per test process.
///
/// Cargo cannot make a test of one package depend on the binaries of another (artifact
/// dependencies are unstable), so this runs `cargo build --bins -p ycloud-controller -p
/// ycloud-cni` into the target directory this test binary was built in (found from its own
/// path, `<target>/<profile>/deps/e2e-…`): up to date it takes a second; cargo's own lock
/// serialises parallel test processes. `YCLOUD_BIN_DIR=<dir>` skips the build and uses the
/// binaries in that directory (e.g. the ones `hack/demo.sh` built).
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let dir = match std::env::var_os("YCLOUD_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => build_bins(),
        };
        let bin = |name: &str| {
            let p = dir.join(name);
            assert!(
                p.is_file(),
                "{} is missing (YCLOUD_BIN_DIR or the build went wrong)",
                p.display()
            );
            p
        };
        Bins {
            controller: bin("ycloud-controller"),
            ycloudctl: bin("ycloudctl"),
            cni: bin("ycloud-cni"),
            cnid: bin("ycloud-cnid"),
        }
    })
}

fn build_bins() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in <target>/<profile>/deps")
        .to_path_buf();
    let target = profile_dir
        .parent()
        .expect("<target>/<profile>")
        .to_path_buf();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(other) => other.to_string(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let manifest = repo_root().join("Cargo.toml");
    let t0 = Instant::now();
    let out = Command::new(&cargo)
        .args([
            "build",
            "--bins",
            "-p",
            "ycloud-controller",
            "-p",
            "ycloud-cni",
        ])
        .args(["--profile", &profile, "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cargo} build: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cargo build of the product binaries into {} failed ({}):\n{}",
        target.display(),
        out.status,
        tail(&stderr, 30)
    );
    eprintln!(
        "e2e: product binaries up to date in {} ({:.1} s)",
        profile_dir.display(),
        t0.elapsed().as_secs_f64()
    );
    profile_dir
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `f` every 100 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon of ours (controller, cnid): its stderr goes to a log file; dropped, it is killed
/// by pid (SIGKILL) and reaped.
#[derive(Debug)]
struct Daemon {
    child: Child,
}

impl Daemon {
    fn spawn(
        what: &str,
        program: &str,
        args: &[String],
        env: &[(&str, String)],
        log: &Path,
    ) -> Daemon {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what} ({program}): {e}"));
        Daemon { child }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A pod made through the CNI plugin.
#[derive(Debug)]
pub struct PodNet {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    pub netns: Netns,
    /// The node (1-based) whose daemon plugged it.
    pub node: u8,
}

/// How a [`Cluster`] starts.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Manifests from `hack/demo/manifests` to copy (file names), `@CHASSIS@` replaced.
    pub demo_manifests: Vec<&'static str>,
    /// `--offload` for the controller.
    pub offload: bool,
}

/// How many nodes a [`Cluster`] has and where the service gateway runs.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Chassis in the sandbox (1..=4), each with its own `ycloud-cnid`.
    pub nodes: u8,
    /// `--svcgw-chassis` for the controller: (node, priority). As on a real cluster, the
    /// operator names the gateway nodes; the controller is told nothing else about nodes.
    pub svcgw: Vec<(u8, u16)>,
}

impl Default for Layout {
    /// One node, the service gateway on it: what [`Cluster::start`] runs.
    fn default() -> Layout {
        Layout {
            nodes: 1,
            svcgw: vec![(1, 100)],
        }
    }
}

/// One node's `ycloud-cnid` and how the plugin reaches it.
struct NodeDaemon {
    /// Kept for its guard: dropped, the daemon is killed.
    _daemon: Daemon,
    /// The CNI network configuration naming this daemon's socket.
    conf: String,
}

/// The whole product on one sandbox. Field order is drop order: servers, pods (after a CNI
/// DEL each, in `Drop`), the daemons, the controller, the sandbox.
pub struct Cluster {
    servers: BTreeMap<String, Background>,
    pods: BTreeMap<String, PodNet>,
    outside: Option<Pod>,
    /// By node (1-based).
    cnids: BTreeMap<u8, NodeDaemon>,
    controller: Option<Daemon>,
    controller_args: Vec<String>,
    manifests: TempDir,
    work: TempDir,
    pub sb: Sandbox,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("sandbox", &self.sb.id())
            .field("manifests", &self.manifests.path())
            .finish()
    }
}

impl Cluster {
    /// Sandbox up, the chosen demo manifests in place, the controller synced, the daemon
    /// answering the plugin's STATUS: one node.
    pub fn start(options: &ClusterOptions) -> Cluster {
        Cluster::start_on(options, &Layout::default())
    }

    /// [`Cluster::start`] on `layout.nodes` nodes: one controller, one daemon per node. With
    /// several nodes a `Node` object per node is written (`04-node.yaml`, replacing the
    /// demo's one-node file), as a cluster has one for every node.
    pub fn start_on(options: &ClusterOptions, layout: &Layout) -> Cluster {
        Cluster::start_with_args(options, layout, &[])
    }

    /// [`Cluster::start_on`] with more controller flags; `@SB@` in one is replaced by the
    /// sandbox's SB unix remote (e.g. `--ovn-sb=@SB@`).
    pub fn start_with_args(options: &ClusterOptions, layout: &Layout, extra: &[&str]) -> Cluster {
        // built (once per process) before anything starts: a failed build leaves nothing
        // running
        bins();
        assert!(
            (1..=4).contains(&layout.nodes),
            "Layout::nodes = {}: a sandbox has 1 to 4 nodes",
            layout.nodes
        );
        let sb = Sandbox::up(SandboxOptions {
            nodes: (layout.nodes > 1).then_some(layout.nodes),
            ..SandboxOptions::default()
        })
        .expect("sandbox up");
        let manifests = tempfile::Builder::new()
            .prefix("yce2e-m")
            .tempdir()
            .expect("manifest dir");
        let work = tempfile::Builder::new()
            .prefix("yce2e-w")
            .tempdir()
            .expect("work dir");
        let mut cluster = Cluster {
            servers: BTreeMap::new(),
            pods: BTreeMap::new(),
            outside: None,
            cnids: BTreeMap::new(),
            controller: None,
            controller_args: Vec::new(),
            manifests,
            work,
            sb,
        };
        for f in &options.demo_manifests {
            cluster.copy_demo_manifest(f);
        }
        if layout.nodes > 1 {
            let nodes: Vec<String> = (1..=layout.nodes)
                .map(|k| {
                    format!(
                        "apiVersion: v1\nkind: Node\nmetadata: {{name: \"{}\"}}\n",
                        cluster.chassis(k)
                    )
                })
                .collect();
            cluster.write_manifest("04-node.yaml", &nodes.join("---\n"));
        }
        let mut args = vec![
            format!("--source=dir:{}", cluster.manifests.path().display()),
            format!("--nb={}", cluster.sb.nb_unix()),
            "--poll-ms=100".into(),
        ];
        for (node, priority) in &layout.svcgw {
            args.push(format!(
                "--svcgw-chassis={}:{priority}",
                cluster.chassis(*node)
            ));
        }
        if options.offload {
            args.push("--offload".into());
        }
        for a in extra {
            args.push(a.replace("@SB@", cluster.sb.sb_unix()));
        }
        cluster.controller_args = args;
        cluster.start_controller();
        cluster.wait_synced();
        for k in 1..=layout.nodes {
            cluster.start_cnid(k);
        }
        cluster
    }

    /// Starts node `k`'s `ycloud-cnid` as a hostNetwork DaemonSet pod runs: in the node's
    /// netns, on its OVS database, named after its chassis; waits until the plugin's STATUS
    /// through its socket answers.
    fn start_cnid(&mut self, k: u8) {
        let bins = bins();
        let node = self
            .sb
            .node(k)
            .unwrap_or_else(|| panic!("the sandbox has no node {k}"));
        let sock = self.work.path().join(format!("cni-{k}.sock"));
        let cnid_args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            node.netns.clone(),
            bins.cnid.to_string_lossy().into_owned(),
            format!("--socket={}", sock.display()),
            format!("--ovs-db={}", node.ovs_db),
            "--bridge=br-int".into(),
            format!("--status-dir={}", self.status_dir().display()),
            format!("--node-name={}", node.chassis),
            "--mgmt-interval-ms=500".into(),
            "--annotation-timeout-ms=30000".into(),
            "--ovn-installed-timeout-ms=30000".into(),
        ];
        // `ip netns exec` execs the daemon after setns: the child's pid is the daemon's.
        // Its own state (pods' netns for probes) in the test's dir, not the host's
        // /var/lib/ycloud/cnid that parallel tests (and the other nodes) would share; by
        // environment, which a daemon without the setting ignores
        let state = self.work.path().join(format!("cnid-{k}-state"));
        let mut daemon = Daemon::spawn(
            "ycloud-cnid",
            "ip",
            &cnid_args,
            &[("YCLOUD_STATE_DIR", state.to_string_lossy().into_owned())],
            &self.work.path().join(Self::cnid_log(k)),
        );
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"ycloud","type":"ycloud-cni","daemonSocket":"{}"}}"#,
            sock.display()
        );
        wait_for(
            &format!("node {k}'s ycloud-cnid to answer STATUS"),
            Duration::from_secs(20),
            || {
                assert!(
                    daemon.running(),
                    "node {k}'s ycloud-cnid exited:\n{}",
                    self.log_tail(&Self::cnid_log(k), 20)
                );
                cni_call(&conf, "STATUS", None).ok()
            },
        );
        self.cnids.insert(
            k,
            NodeDaemon {
                _daemon: daemon,
                conf,
            },
        );
    }

    /// Node 1 keeps the one-node log name.
    fn cnid_log(k: u8) -> String {
        if k == 1 {
            "cnid.log".into()
        } else {
            format!("cnid-{k}.log")
        }
    }

    /// How many nodes the sandbox has.
    pub fn nodes(&self) -> u8 {
        self.sb.nodes()
    }

    /// Node `k`'s chassis name (= its `Node` object's name, its daemon's `--node-name`).
    pub fn chassis(&self, k: u8) -> String {
        self.sb
            .node(k)
            .unwrap_or_else(|| panic!("the sandbox has no node {k}"))
            .chassis
    }

    pub fn status_dir(&self) -> PathBuf {
        self.manifests.path().join(".status")
    }

    /// Copies `hack/demo/manifests/<name>` in, with the sandbox's chassis name.
    pub fn copy_demo_manifest(&self, name: &str) {
        let src = repo_root().join("hack/demo/manifests").join(name);
        let text =
            fs::read_to_string(&src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
        self.write_manifest(name, &text);
    }

    /// Copies the demo's manifest of one pod, scheduled on node `k` (`spec.nodeName` = its
    /// chassis, as the scheduler sets it before the runtime calls the CNI plugin): with
    /// several nodes the controller needs it to tell which node's daemon probes the pod.
    pub fn copy_demo_pod_on(&self, name: &str, k: u8) {
        let src = repo_root().join("hack/demo/manifests").join(name);
        let text =
            fs::read_to_string(&src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
        assert!(
            text.contains("spec: {") && !text.contains("nodeName"),
            "{}: expected a one-line `spec: {{...}}` without nodeName",
            src.display()
        );
        let placed = text.replace("spec: {", &format!("spec: {{nodeName: \"@CHASSIS{k}@\", "));
        self.write_manifest(name, &placed);
    }

    /// Writes a manifest file atomically (a temp file renamed: the controller never reads a
    /// half-written file), with `@CHASSIS@` (node 1) and `@CHASSIS<k>@` (node k) replaced.
    pub fn write_manifest(&self, name: &str, text: &str) {
        let mut text = text.replace("@CHASSIS@", self.sb.chassis());
        for k in 1..=self.sb.nodes() {
            text = text.replace(&format!("@CHASSIS{k}@"), &self.chassis(k));
        }
        assert!(
            !text.contains("@CHASSIS"),
            "manifest {name} names a node the sandbox does not have ({} nodes):\n{text}",
            self.sb.nodes()
        );
        let tmp = self.manifests.path().join(format!(".{name}.tmp"));
        fs::write(&tmp, text).expect("write manifest");
        fs::rename(&tmp, self.manifests.path().join(name)).expect("rename manifest");
    }

    pub fn remove_manifest(&self, name: &str) {
        fs::remove_file(self.manifests.path().join(name))
            .unwrap_or_else(|e| panic!("removing manifest {name}: {e}"));
    }

    fn start_controller(&mut self) {
        let bins = bins();
        self.controller = Some(Daemon::spawn(
            "ycloud-controller",
            &bins.controller.to_string_lossy(),
            &self.controller_args,
            &[],
            &self.work.path().join("controller.log"),
        ));
    }

    /// Waits for `synced: true` in the controller's own status file.
    pub fn wait_synced(&mut self) {
        let file = self.status_dir().join("controller.yaml");
        let mut ctl = self.controller.take();
        wait_for(
            "the controller's first sync",
            Duration::from_secs(60),
            || {
                let running = ctl.as_mut().is_some_and(Daemon::running);
                assert!(
                    running,
                    "ycloud-controller exited:\n{}",
                    self.log_tail("controller.log", 20)
                );
                fs::read_to_string(&file)
                    .ok()
                    .filter(|t| t.contains("synced: true"))
            },
        );
        self.controller = ctl;
    }

    /// `kill -9` of the controller.
    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            c.kill();
        }
    }

    /// Starts the controller again with the same arguments (its status dir stays).
    pub fn restart_controller(&mut self) {
        self.kill_controller();
        self.start_controller();
    }

    /// Runs the CNI plugin against node `k`'s daemon (see [`cni_call`]).
    fn cni(&self, k: u8, command: &str, pod: Option<(&str, &str, &str)>) -> Result<String, String> {
        let d = self
            .cnids
            .get(&k)
            .ok_or_else(|| format!("node {k} has no ycloud-cnid"))?;
        cni_call(&d.conf, command, pod)
    }

    /// A pod `namespace/name` (its manifest must exist): a netns, then CNI ADD. Returns its
    /// address from the CNI result.
    pub fn add_pod(&mut self, namespace: &str, name: &str) -> String {
        self.add_pod_on(1, namespace, name)
    }

    /// [`Cluster::add_pod`] on node `k`: the runtime of that node calls the plugin, which
    /// talks to that node's daemon, which plugs the pod into that node's br-int.
    pub fn add_pod_on(&mut self, k: u8, namespace: &str, name: &str) -> String {
        let netns_name = format!("ycd{}-{name}", self.sb.id());
        let netns = Netns::create(&netns_name).expect("pod netns");
        let t0 = Instant::now();
        let out = self
            .cni(k, "ADD", Some((namespace, name, &netns_name)))
            .unwrap_or_else(|e| {
                panic!(
                    "CNI ADD {namespace}/{name} on node {k}: {e}\n{}",
                    self.diagnostics()
                )
            });
        let result: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("CNI ADD {name}: result is not JSON ({e}): {out}"));
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("CNI ADD {name}: no address in {out}"))
            .to_string();
        let on = if self.nodes() > 1 {
            format!(" on node {k}")
        } else {
            String::new()
        };
        eprintln!(
            "e2e: pod {namespace}/{name} {ip}{on} (ADD {:.2} s)",
            t0.elapsed().as_secs_f64()
        );
        self.pods.insert(
            name.to_string(),
            PodNet {
                name: name.to_string(),
                namespace: namespace.to_string(),
                ip: ip.clone(),
                netns,
                node: k,
            },
        );
        ip
    }

    pub fn pod(&self, name: &str) -> &PodNet {
        self.pods
            .get(name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// An HTTP server in pod `name` on `port` answering `"<name> from=<source>"`.
    pub fn serve(&mut self, name: &str, port: u16) {
        let server = self
            .pod(name)
            .netns
            .http_server(name, port)
            .unwrap_or_else(|e| panic!("HTTP server in {name}: {e}"));
        self.servers.insert(format!("{name}:{port}"), server);
    }

    /// Stops the HTTP server of pod `name` on `port`.
    pub fn stop_server(&mut self, name: &str, port: u16) {
        self.servers.remove(&format!("{name}:{port}"));
    }

    /// The host on the external network (200.0.0.50 on br-ex) with a route to the EIP pool
    /// through the EIP gateway's address, as in the demo.
    pub fn add_outside(&mut self) -> &Netns {
        let outside = self
            .sb
            .add_outside(&OutsideSpec {
                name: "outside",
                mac: "0a:00:00:c8:00:32",
                address: "200.0.0.50/24",
                gateway: None,
                mtu: None,
            })
            .expect("outside host");
        outside
            .exec(&["ip", "route", "add", "200.0.0.96/27", "via", "200.0.0.2"])
            .expect("route to the EIP pool");
        self.outside = Some(outside);
        self.outside.as_ref().expect("outside")
    }

    pub fn outside(&self) -> &Netns {
        self.outside.as_ref().expect("add_outside first")
    }

    /// The node's network namespace (where the management port lives).
    pub fn node(&self) -> Netns {
        Netns::existing(self.sb.node_netns())
    }

    /// Node `k`'s network namespace (its daemons, its management port).
    pub fn node_on(&self, k: u8) -> Netns {
        let node = self
            .sb
            .node(k)
            .unwrap_or_else(|| panic!("the sandbox has no node {k}"));
        Netns::existing(&node.netns)
    }

    /// The address of node `k`'s management port on `vpc`'s join network, from the node
    /// file the controller writes for that node's daemon; `None` until it is there.
    pub fn mgmt_ip(&self, k: u8, vpc: &str) -> Option<String> {
        let file = self
            .status_dir()
            .join("nodes")
            .join(format!("{}.json", self.chassis(k)));
        let doc: serde_json::Value = serde_json::from_slice(&fs::read(file).ok()?).ok()?;
        doc["managementPorts"]
            .as_array()?
            .iter()
            .find(|p| p["vpc"] == vpc)?["ips"][0]
            .as_str()?
            .split('/')
            .next()
            .map(str::to_string)
    }

    /// Node `k`'s datapath flows that push or pop a Geneve header (`tnl_push`, `tnl_pop`):
    /// the proof that traffic crossed nodes.
    pub fn tunnel_flows_of(&self, k: u8) -> String {
        match self
            .sb
            .node_tool(k, &["ovs-appctl", "-t", "ovs-vswitchd", "dpctl/dump-flows"])
        {
            Ok(flows) => flows
                .lines()
                .filter(|l| l.contains("tnl_push") || l.contains("tnl_pop"))
                .map(|l| format!("{l}\n"))
                .collect(),
            Err(e) => format!("(dump failed: {e})\n"),
        }
    }

    /// [`Cluster::tunnel_flows_of`] for every node, headed by node: what a failed
    /// cross-node assertion needs first. Empty with one node (no tunnels).
    pub fn tunnel_flows(&self) -> String {
        let mut out = String::new();
        if self.nodes() < 2 {
            return out;
        }
        for k in 1..=self.nodes() {
            out.push_str(&format!(
                "--- node {k} ({}) tunnel flows:\n{}",
                self.chassis(k),
                self.tunnel_flows_of(k)
            ));
        }
        out
    }

    /// Empties every node's datapath flow cache (`dpctl/del-flows`): the next packets are
    /// upcalls again, so the flows seen afterwards are the next scenario's own. Nothing
    /// else changes (the OpenFlow tables stay).
    pub fn flush_datapaths(&self) {
        for k in 1..=self.nodes() {
            self.sb
                .node_tool(k, &["ovs-appctl", "-t", "ovs-vswitchd", "dpctl/del-flows"])
                .unwrap_or_else(|e| panic!("dpctl/del-flows on node {k}: {e}"));
        }
    }

    /// `ycloudctl` with the sandbox's NB/SB in the environment: (exit code, stdout, stderr).
    pub fn ycloudctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&bins().ycloudctl)
            .args(args)
            .env("OVN_NB_DB", self.sb.nb_unix())
            .env("OVN_SB_DB", self.sb.sb_unix())
            .stdin(Stdio::null())
            .output()
            .expect("run ycloudctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The NB `Load_Balancer` rows as `ovn-nbctl` shows them.
    pub fn nb_lbs(&self) -> String {
        self.sb
            .nbctl(&[
                "--columns=_uuid,name,vips,external_ids",
                "list",
                "Load_Balancer",
            ])
            .unwrap_or_else(|e| format!("(ovn-nbctl failed: {e})"))
    }

    /// The VIP keys (`ip:port`) of every load balancer in NB.
    pub fn nb_vips(&self) -> BTreeSet<String> {
        let out = self
            .sb
            .nbctl(&["--bare", "--columns=vips", "list", "Load_Balancer"])
            .unwrap_or_default();
        out.split_whitespace()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, _)| k.trim_matches('"').to_string())
            })
            .collect()
    }

    /// The backends (`ip:port`) of `vip` (`ip:port`) over every load balancer in NB; `None`
    /// when no load balancer has the VIP.
    pub fn nb_backends(&self, vip: &str) -> Option<BTreeSet<String>> {
        let out = self
            .sb
            .nbctl(&["--bare", "--columns=vips", "list", "Load_Balancer"])
            .ok()?;
        let mut found = None;
        for (k, v) in out.split_whitespace().filter_map(|kv| kv.split_once('=')) {
            if k.trim_matches('"') == vip {
                found
                    .get_or_insert_with(BTreeSet::new)
                    .extend(v.trim_matches('"').split(',').map(str::to_string));
            }
        }
        found
    }

    fn log_tail(&self, name: &str, n: usize) -> String {
        let text = fs::read_to_string(self.work.path().join(name)).unwrap_or_default();
        tail(&text, n)
    }

    /// What a failure prints: the controller's and the daemons' log tails, the service
    /// statuses, the NB load balancers and (several nodes) every node's tunnel flows.
    pub fn diagnostics(&self) -> String {
        let statuses = fs::read_dir(self.status_dir().join("YusurService"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|ns| fs::read_dir(ns.path()).into_iter().flatten().flatten())
            .map(|f| fs::read_to_string(f.path()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n");
        let mut cnids = String::new();
        for k in self.cnids.keys() {
            let log = Self::cnid_log(*k);
            cnids.push_str(&format!(
                "=== {log} (node {k}, last 20 lines)\n{}\n",
                self.log_tail(&log, 20)
            ));
        }
        format!(
            "=== controller.log (last 30 lines)\n{}\n{cnids}\
             === service status files\n{statuses}\n=== NB Load_Balancer\n{}\n{}",
            self.log_tail("controller.log", 30),
            self.nb_lbs(),
            self.tunnel_flows()
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "e2e: sandbox {} failed; state at the time:\n{}",
                self.sb.id(),
                self.diagnostics()
            );
        }
        self.servers.clear();
        // CNI DEL while the daemon still runs, as a runtime does before deleting the netns
        let pods = std::mem::take(&mut self.pods);
        for p in pods.values() {
            if let Err(e) = self.cni(p.node, "DEL", Some((&p.namespace, &p.name, p.netns.name()))) {
                eprintln!("e2e: {e}");
            }
        }
        drop(pods);
        self.outside = None;
        self.cnids.clear();
        self.controller = None;
    }
}

/// Runs the CNI plugin as a container runtime does: `CNI_*` in a clean environment, the
/// network configuration `conf` on stdin. Returns stdout.
pub fn cni_call(
    conf: &str,
    command: &str,
    pod: Option<(&str, &str, &str)>,
) -> Result<String, String> {
    let mut cmd = Command::new(&bins().cni);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/opt/cni/bin");
    if let Some((ns, name, netns)) = pod {
        let id = format!("e2e-{ns}-{name}");
        cmd.env("CNI_CONTAINERID", &id)
            .env("CNI_NETNS", format!("/run/netns/{netns}"))
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={id}"
                ),
            );
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting ycloud-cni: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.as_bytes())
        .map_err(|e| format!("writing the CNI config: {e}"))?;
    // ADD waits for the annotation and ovn-installed (30 s each at most)
    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("CNI {command} did not finish within 75 s"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for ycloud-cni: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ycloud-cni output: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "CNI {command} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// What a series of requests saw.
#[derive(Debug, Default, Clone)]
pub struct Series {
    pub sent: usize,
    pub failures: Vec<String>,
    /// backend name -> the source addresses it reported
    pub seen: BTreeMap<String, BTreeSet<String>>,
}

impl Series {
    pub fn ok(&self) -> usize {
        self.sent - self.failures.len()
    }
    pub fn backends(&self) -> BTreeSet<&str> {
        self.seen.keys().map(String::as_str).collect()
    }
    pub fn sources(&self) -> BTreeSet<&str> {
        self.seen.values().flatten().map(String::as_str).collect()
    }
    /// One GET of `url` from `from`, recorded.
    pub fn record_get(&mut self, from: &Netns, url: &str) {
        self.record(get(from, url, HTTP));
    }
    fn record(&mut self, r: Result<String, String>) {
        self.sent += 1;
        match r {
            Ok(body) => {
                let mut it = body.split_whitespace();
                let backend = it.next().unwrap_or_default().to_string();
                let src = it
                    .next()
                    .and_then(|s| s.strip_prefix("from="))
                    .unwrap_or_default()
                    .to_string();
                self.seen.entry(backend).or_default().insert(src);
            }
            Err(e) => self.failures.push(e),
        }
    }
}

/// One GET; the body or why not.
pub fn get(from: &Netns, url: &str, timeout: Duration) -> Result<String, String> {
    from.http_get(url, timeout)
        .map_err(|e| format!("GET {url} from {}: {e}", from.name()))
}

/// The first successful GET within `timeout` (flows land a moment after the rows).
pub fn warm(from: &Netns, url: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match get(from, url, HTTP) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `n` GETs.
pub fn series(from: &Netns, url: &str, n: usize) -> Series {
    let mut s = Series::default();
    for _ in 0..n {
        s.record(get(from, url, HTTP));
    }
    s
}

/// GETs until every backend in `want` answered (at least `min`, at most `max` requests):
/// asserting on a fixed count would fail by bad luck now and then (3 backends, 20 requests:
/// 0.09 %); this fails only when one really never answers.
pub fn distribution(from: &Netns, url: &str, want: &[&str], min: usize, max: usize) -> Series {
    let mut s = Series::default();
    while s.sent < max {
        s.record(get(from, url, HTTP));
        if s.sent >= min && want.iter().all(|w| s.seen.contains_key(*w)) {
            break;
        }
    }
    s
}

/// Python for a request stream: one short GET per `interval` for `secs` seconds, each try
/// given `timeout` seconds to connect and answer; prints `<unix time> <0|1> <seconds taken>`
/// per try. Run it with [`probe_args`].
pub const PROBE_PY: &str = r#"
import socket, sys, time
host, port, dur, iv, tmo = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
end = time.time() + dur
while time.time() < end:
    t0 = time.time(); ok = 0
    try:
        s = socket.create_connection((host, port), timeout=tmo)
        s.settimeout(tmo); s.sendall(b"GET / HTTP/1.0\r\n\r\n"); ok = 1 if s.recv(100) else 0; s.close()
    except Exception:
        pass
    print("%.3f %d %.3f" % (t0, ok, time.time() - t0), flush=True)
    d = iv - (time.time() - t0)
    if d > 0:
        time.sleep(d)
"#;

/// The command line that runs [`PROBE_PY`] against `host:port`.
pub fn probe_args(host: &str, port: u16, secs: f64, interval: f64, timeout: f64) -> Vec<String> {
    let mut args: Vec<String> = vec!["python3".into(), "-c".into(), PROBE_PY.into()];
    args.extend([
        host.to_owned(),
        port.to_string(),
        secs.to_string(),
        interval.to_string(),
        timeout.to_string(),
    ]);
    args
}

/// Seconds since the Unix epoch (the probe's clock).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What a request stream saw from an event on (see [`outage_after`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    /// Tries that failed (no answer within the probe's timeout).
    pub failed: usize,
    /// The first failure run's length: from the event to the first success after it (0 if
    /// none failed, infinite if none succeeded after it).
    pub secs: f64,
    /// Failure runs: a later one is a flap (or a crash).
    pub runs: usize,
    /// Tries in all.
    pub probes: usize,
    /// The slowest successful try, in seconds.
    pub slowest: f64,
    /// Successful tries that took longer than 0.2 s (a stalled or retransmitted packet).
    pub slow: usize,
}

/// The tries of [`PROBE_PY`]'s output `text` made at `at` or later, summed up.
pub fn outage_after(text: &str, at: f64) -> Outage {
    let rows: Vec<(f64, bool, f64)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let t = it.next()?.parse().ok()?;
            let ok = it.next()? == "1";
            Some((t, ok, it.next().and_then(|s| s.parse().ok()).unwrap_or(0.0)))
        })
        .filter(|(t, _, _)| *t >= at)
        .collect();
    let failed = rows.iter().filter(|(_, ok, _)| !ok).count();
    let secs = match rows.iter().position(|(_, ok, _)| !ok) {
        None => 0.0,
        Some(i) => rows[i..]
            .iter()
            .find(|(_, ok, _)| *ok)
            .map(|(t, _, _)| t - at)
            .unwrap_or(f64::INFINITY),
    };
    let runs = rows.windows(2).filter(|w| w[0].1 && !w[1].1).count()
        + usize::from(rows.first().is_some_and(|(_, ok, _)| !ok));
    let answered = rows
        .iter()
        .filter(|(_, ok, _)| *ok)
        .map(|(_, _, took)| *took);
    Outage {
        failed,
        secs,
        runs,
        probes: rows.len(),
        slowest: answered.clone().fold(0.0, f64::max),
        slow: answered.filter(|took| *took > 0.2).count(),
    }
}

/// The probe rows around every failed try (relative times), for a failure message.
pub fn failed_tries(text: &str, at: f64) -> String {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let t: f64 = it.next()?.parse().ok()?;
            (t >= at && it.next()? == "0").then(|| {
                format!(
                    "  try at +{:.3} s failed after {} s",
                    t - at,
                    it.next().unwrap_or("?")
                )
            })
        })
        .collect::<Vec<_>>()
        .join("\n")
}
