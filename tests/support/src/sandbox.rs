//! A whole OVN sandbox per test, through `hack/ovn-sandbox.sh`.
//!
//! [`Sandbox::up`] runs `hack/ovn-sandbox.sh up --dir <temp dir>`: NB (standalone or a
//! 3-member RAFT cluster), SB and northd in the root namespace on unix sockets and loopback TCP
//! ports picked at start-up, and one chassis (ovsdb-server, ovs-vswitchd on the userspace
//! datapath, ovn-controller) inside its own network namespace, so sandboxes of parallel tests
//! never share a tap. The script records everything it starts; dropping the [`Sandbox`] runs
//! `down`, which stops exactly that (also when the test panics: drop runs during unwinding).
//!
//! With [`SandboxOptions::nodes`] > 1 there are several chassis, each in a netns of its own,
//! joined by an underlay (Geneve through OVS userspace tunnelling): [`Sandbox::node`] tells
//! each node's names, [`Sandbox::add_pod_on`] puts a pod behind a chosen node's br-int,
//! [`Sandbox::node_tool`] runs ctl tools against a node's daemons, and
//! [`Sandbox::kill_node_daemon`] / [`Sandbox::node_start`] stop and restart a node's
//! `ovs-vswitchd` or `ovn-controller` (failover tests); [`Sandbox::restart_crashed_vswitchd`]
//! brings back a vswitchd that died on its own (OVS 3.1.0's userspace conntrack assertion).
//!
//! The script is the single implementation (tests, the demo and people at a shell use the
//! same one); this module parses its `env` output and wraps the ctl tools with the sandbox's
//! databases and run dirs set explicitly.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::netns::{self, Netns, require_root};

/// Everything that can go wrong in the sandbox and netns helpers.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "{what} needs root (network namespaces, OVS), but the effective uid is {euid}: run the tests as root"
    )]
    NotRoot { what: String, euid: String },
    #[error("could not start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}{}", if stdout.is_empty() { String::new() } else { format!("\nstdout: {stdout}") })]
    Failed {
        command: String,
        status: String,
        stdout: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {timeout:?}: {stderr}")]
    Timeout {
        command: String,
        timeout: Duration,
        stderr: String,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox env output, line {line}: {reason}: {text:?}")]
    EnvSyntax {
        line: usize,
        reason: &'static str,
        text: String,
    },
    #[error("sandbox env output has no {key}")]
    EnvMissing { key: String },
    #[error("{what} exited at start-up ({status}): {stderr}")]
    ServerExited {
        what: String,
        status: String,
        stderr: String,
    },
    #[error("{what} did not listen on port {port} within 15 s")]
    NotListening { what: String, port: u16 },
    #[error("invalid sandbox option: {0}")]
    Options(String),
}

/// How to bring a sandbox up.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// `Some(3)`: NB as a 3-member RAFT cluster. Other sizes are refused.
    pub clustered: Option<u8>,
    /// Chassis name (`system-id`); default `ycs-<id>`. Node K > 1 is `<name>-nK`.
    pub name: Option<String>,
    /// How many chassis (1..=4); `None` = 1, the single-node layout.
    pub nodes: Option<u8>,
    /// MTU of the underlay between the nodes (1280..=9000); `None` = 1500.
    pub underlay_mtu: Option<u32>,
}

/// One chassis of a sandbox (node 1 is the single-node chassis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// 1-based.
    pub index: u8,
    /// The netns its daemons, bridges and taps live in.
    pub netns: String,
    /// Its `system-id`, the SB chassis name.
    pub chassis: String,
    /// `unix:` remote of its Open_vSwitch database.
    pub ovs_db: String,
    /// Its run dir (pidfiles, unixctl sockets, `br-int.mgmt`).
    pub rundir: PathBuf,
    /// Its Geneve endpoint (`ovn-encap-ip`): `127.0.0.1` alone, `192.168.100.K` with several.
    pub encap_ip: String,
}

/// A node's `ovs-vswitchd` that had died, found (and started again) by
/// [`Sandbox::restart_crashed_vswitchd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VswitchdCrash {
    pub node: u8,
    /// The `EMER` line it logged before dying (OVS 3.1.0's conntrack assertion reads
    /// `conntrack.c:1063: assertion conn->conn_type == CT_CONN_TYPE_DEFAULT failed in
    /// conn_update_state()`); `None` when it left none (killed from outside).
    pub emer: Option<String>,
}

impl std::fmt::Display for VswitchdCrash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.emer {
            Some(line) => write!(f, "node {}'s ovs-vswitchd died: {line}", self.node),
            None => write!(
                f,
                "node {}'s ovs-vswitchd died without an EMER line in its log",
                self.node
            ),
        }
    }
}

/// Bounds for the script and the ctl tools: generous for a loaded 2-core machine, but finite.
const UP_TIMEOUT: Duration = Duration::from_secs(120);
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// The `export KEY='value'` lines printed by `ovn-sandbox.sh env`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxEnv {
    vars: BTreeMap<String, String>,
}

impl SandboxEnv {
    /// Parses `export KEY='value'` / `export KEY=value` lines; blank lines and `#` comments are
    /// skipped. Values never contain a single quote (they are paths and remotes).
    pub fn parse(text: &str) -> Result<SandboxEnv, SandboxError> {
        let mut vars = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason| SandboxError::EnvSyntax {
                line: i + 1,
                reason,
                text: raw.to_string(),
            };
            let rest = line
                .strip_prefix("export ")
                .ok_or_else(|| err("expected `export KEY=value`"))?;
            let (key, value) = rest
                .split_once('=')
                .ok_or_else(|| err("no `=` after the variable name"))?;
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err("bad variable name"));
            }
            let value = match value.strip_prefix('\'') {
                Some(v) => v
                    .strip_suffix('\'')
                    .filter(|v| !v.contains('\''))
                    .ok_or_else(|| err("unbalanced single quotes"))?,
                None if value.contains(['\'', '"', ' ']) => {
                    return Err(err("unquoted value with quotes or spaces"));
                }
                None => value,
            };
            vars.insert(key.to_string(), value.to_string());
        }
        Ok(SandboxEnv { vars })
    }

    pub fn get(&self, key: &str) -> Result<&str, SandboxError> {
        self.vars
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| SandboxError::EnvMissing { key: key.into() })
    }

    /// All variables, e.g. to pass to a process under test.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A comma-separated remote list split into its members.
    fn list(&self, key: &str) -> Result<Vec<String>, SandboxError> {
        Ok(self
            .get(key)?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// The keys every `env` output must carry (checked once at `up`, so accessors cannot fail).
const REQUIRED_KEYS: &[&str] = &[
    "YCLOUD_SANDBOX_DIR",
    "YCLOUD_SANDBOX_ID",
    "YCLOUD_CHASSIS",
    "YCLOUD_NODE_NETNS",
    "OVN_NB_DB",
    "OVN_SB_DB",
    "YCLOUD_NB_TCP",
    "YCLOUD_SB_TCP",
    "YCLOUD_NB_CTL",
    "YCLOUD_OVS_DB",
    "OVS_RUNDIR",
    "OVN_RUNDIR",
    "YCLOUD_SANDBOX_LOG",
];

/// The repository's `hack/ovn-sandbox.sh` (this crate lives in `tests/support`), or
/// `$YCLOUD_SANDBOX_SCRIPT`.
pub fn sandbox_script() -> PathBuf {
    if let Some(p) = std::env::var_os("YCLOUD_SANDBOX_SCRIPT") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/ovn-sandbox.sh")
}

/// A running sandbox. Dropping it runs `ovn-sandbox.sh down` and deletes its directory.
#[derive(Debug)]
pub struct Sandbox {
    env: SandboxEnv,
    script: PathBuf,
    nb_unix: Vec<String>,
    nb_tcp: Vec<String>,
    /// `None` once `down` ran.
    dir: Option<TempDir>,
    dir_path: PathBuf,
    /// What `up` printed (timings), for reports.
    up_output: String,
}

impl Sandbox {
    /// Brings a sandbox up in a new temp dir and waits until its chassis is in SB.
    pub fn up(options: SandboxOptions) -> Result<Sandbox, SandboxError> {
        if let Some(n) = options.clustered.filter(|n| *n != 3) {
            return Err(SandboxError::Options(format!(
                "clustered: Some({n}): only a 3-member NB cluster is supported"
            )));
        }
        if let Some(n) = options.nodes.filter(|n| !(1..=4).contains(n)) {
            return Err(SandboxError::Options(format!(
                "nodes: Some({n}): a sandbox has 1 to 4 nodes"
            )));
        }
        if let Some(m) = options.underlay_mtu.filter(|m| !(1280..=9000).contains(m)) {
            return Err(SandboxError::Options(format!(
                "underlay_mtu: Some({m}): must be 1280..=9000"
            )));
        }
        require_root("an OVN sandbox")?;
        let dir = tempfile::Builder::new()
            .prefix("ycs")
            .tempdir()
            .map_err(|source| SandboxError::Io {
                what: "creating the sandbox temp dir".into(),
                source,
            })?;
        let script = sandbox_script();
        let script_s = script.to_string_lossy().into_owned();
        let dir_s = dir.path().to_string_lossy().into_owned();
        let mut argv = vec![script_s.as_str(), "up", "--dir", &dir_s];
        if options.clustered.is_some() {
            argv.extend(["--clustered", "3"]);
        }
        if let Some(name) = &options.name {
            argv.extend(["--name", name]);
        }
        let nodes = options.nodes.map(|n| n.to_string());
        if let Some(n) = &nodes {
            argv.extend(["--nodes", n]);
        }
        let mtu = options.underlay_mtu.map(|m| m.to_string());
        if let Some(m) = &mtu {
            argv.extend(["--underlay-mtu", m]);
        }
        // if up fails half-way the script has already run `down` itself
        let up_output = netns::run(&argv, UP_TIMEOUT)?;
        let mut sandbox = Sandbox {
            env: SandboxEnv::default(),
            script,
            nb_unix: Vec::new(),
            nb_tcp: Vec::new(),
            dir_path: dir.path().to_path_buf(),
            dir: Some(dir),
            up_output,
        };
        // from here on a failure drops `sandbox`, which runs down
        let env_text = sandbox.script_cmd(&["env"])?;
        sandbox.env = SandboxEnv::parse(&env_text)?;
        for key in REQUIRED_KEYS {
            sandbox.env.get(key)?;
        }
        sandbox.nb_unix = sandbox.env.list("OVN_NB_DB")?;
        sandbox.nb_tcp = sandbox.env.list("YCLOUD_NB_TCP")?;
        Ok(sandbox)
    }

    fn var(&self, key: &str) -> &str {
        // every key read here is in REQUIRED_KEYS, checked by `up`
        self.env.get(key).unwrap_or_default()
    }

    /// Runs `ovn-sandbox.sh <args> --dir <dir>`.
    fn script_cmd(&self, args: &[&str]) -> Result<String, SandboxError> {
        let script = self.script.to_string_lossy();
        let dir = self.dir_path.to_string_lossy();
        let mut argv = vec![script.as_ref()];
        argv.extend_from_slice(args);
        argv.extend(["--dir", dir.as_ref()]);
        netns::run(&argv, UP_TIMEOUT)
    }

    /// The NB remote(s) for OVSDB clients and `ovn-nbctl --db`: one `unix:` remote, or for a
    /// cluster the three members' `unix:` remotes joined by commas (clients find the leader).
    pub fn nb_unix(&self) -> &str {
        self.var("OVN_NB_DB")
    }
    /// Each NB member's `unix:` remote (one entry when standalone).
    pub fn nb_unix_members(&self) -> &[String] {
        &self.nb_unix
    }
    /// NB `tcp:127.0.0.1:PORT` remote(s), comma-joined for a cluster.
    pub fn nb_tcp(&self) -> &str {
        self.var("YCLOUD_NB_TCP")
    }
    /// Each NB member's `tcp:` remote.
    pub fn nb_tcp_members(&self) -> &[String] {
        &self.nb_tcp
    }
    /// The unixctl socket of each NB member (for `cluster/status`).
    pub fn nb_ctl_members(&self) -> Vec<&str> {
        self.var("YCLOUD_NB_CTL").split(',').collect()
    }
    pub fn sb_unix(&self) -> &str {
        self.var("OVN_SB_DB")
    }
    pub fn sb_tcp(&self) -> &str {
        self.var("YCLOUD_SB_TCP")
    }
    /// The node's Open_vSwitch database (`unix:` remote for `ovs-vsctl --db`).
    pub fn ovs_db_unix(&self) -> &str {
        self.var("YCLOUD_OVS_DB")
    }
    /// The network namespace the chassis runs in (its br-int ports live there).
    pub fn node_netns(&self) -> &str {
        self.var("YCLOUD_NODE_NETNS")
    }
    pub fn chassis(&self) -> &str {
        self.var("YCLOUD_CHASSIS")
    }
    /// Short unique id (netns names derive from it).
    pub fn id(&self) -> &str {
        self.var("YCLOUD_SANDBOX_ID")
    }
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }
    pub fn log_dir(&self) -> &Path {
        Path::new(self.var("YCLOUD_SANDBOX_LOG"))
    }
    pub fn env(&self) -> &SandboxEnv {
        &self.env
    }
    /// What `up` printed, including how long it took.
    pub fn up_output(&self) -> &str {
        &self.up_output
    }

    /// Runs an OVS/OVN tool with the sandbox's run dirs in the environment.
    pub fn tool(&self, argv: &[&str]) -> Result<String, SandboxError> {
        let env: Vec<(&str, &str)> = self.env.vars().collect();
        netns::run_with_env(argv, &env, CTL_TIMEOUT)
    }

    fn tool_with(
        &self,
        program: &str,
        pre: &[&str],
        args: &[&str],
    ) -> Result<String, SandboxError> {
        let mut argv = vec![program];
        argv.extend_from_slice(pre);
        argv.extend_from_slice(args);
        self.tool(&argv)
    }

    pub fn nbctl(&self, args: &[&str]) -> Result<String, SandboxError> {
        let db = format!("--db={}", self.nb_unix());
        self.tool_with("ovn-nbctl", &["--timeout=30", &db], args)
    }
    pub fn sbctl(&self, args: &[&str]) -> Result<String, SandboxError> {
        let db = format!("--db={}", self.sb_unix());
        self.tool_with("ovn-sbctl", &["--timeout=30", &db], args)
    }
    pub fn vsctl(&self, args: &[&str]) -> Result<String, SandboxError> {
        let db = format!("--db={}", self.ovs_db_unix());
        self.tool_with("ovs-vsctl", &["--timeout=30", &db], args)
    }
    /// `ovs-appctl -t <target>`: `ovs-vswitchd` and `ovsdb-server` name the node's daemons
    /// (found through OVS_RUNDIR); a path names a unixctl socket.
    pub fn appctl(&self, target: &str, args: &[&str]) -> Result<String, SandboxError> {
        self.tool_with("ovs-appctl", &["--timeout=30", "-t", target], args)
    }
    /// `ovs-ofctl -O OpenFlow15 <args>` against the node's bridges.
    pub fn ofctl(&self, args: &[&str]) -> Result<String, SandboxError> {
        self.tool_with("ovs-ofctl", &["-O", "OpenFlow15"], args)
    }
    pub fn trace(&self, args: &[&str]) -> Result<String, SandboxError> {
        let db = format!("--db={}", self.sb_unix());
        self.tool_with("ovn-trace", &[&db], args)
    }

    /// How many nodes (chassis) the sandbox has.
    pub fn nodes(&self) -> u8 {
        self.env
            .get("YCLOUD_NODES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1)
    }

    /// Node `index` (1-based), or `None` if the sandbox has no such node.
    pub fn node(&self, index: u8) -> Option<Node> {
        if index == 0 || index > self.nodes() {
            return None;
        }
        let key = |what: &str| format!("YCLOUD_NODE{index}_{what}");
        let get = |what: &str| self.env.get(&key(what)).ok().map(str::to_owned);
        Some(Node {
            index,
            netns: get("NETNS")?,
            chassis: get("CHASSIS")?,
            ovs_db: get("OVS_DB")?,
            rundir: PathBuf::from(get("RUNDIR")?),
            encap_ip: get("ENCAP_IP")?,
        })
    }

    fn node_or_err(&self, index: u8) -> Result<Node, SandboxError> {
        self.node(index).ok_or_else(|| {
            SandboxError::Options(format!(
                "node {index}: the sandbox has {} node(s)",
                self.nodes()
            ))
        })
    }

    /// Runs an OVS/OVN tool against node `index`'s daemons: its run/db dirs replace node 1's
    /// in the environment, so `ovs-appctl -t ovs-vswitchd`, `ovs-vsctl`, `ovs-ofctl … br-int`
    /// and `ovn-appctl -t ovn-controller` talk to that node.
    pub fn node_tool(&self, index: u8, argv: &[&str]) -> Result<String, SandboxError> {
        let node = self.node_or_err(index)?;
        let run = node.rundir.to_string_lossy().into_owned();
        let db = node
            .rundir
            .parent()
            .map(|d| d.join("db").to_string_lossy().into_owned())
            .unwrap_or_default();
        let env: Vec<(&str, &str)> = self
            .env
            .vars()
            .map(|(k, v)| match k {
                "OVS_RUNDIR" | "OVN_RUNDIR" => (k, run.as_str()),
                "OVS_DBDIR" | "OVN_DBDIR" => (k, db.as_str()),
                "YCLOUD_OVS_DB" => (k, node.ovs_db.as_str()),
                _ => (k, v),
            })
            .collect();
        netns::run_with_env(argv, &env, CTL_TIMEOUT)
    }

    /// The pid of node `index`'s `daemon` (`ovs-vswitchd`, `ovn-controller`, `ovsdb-server`)
    /// from its pidfile, if that process runs.
    pub fn node_daemon_pid(&self, index: u8, daemon: &str) -> Option<u32> {
        let node = self.node(index)?;
        let pid: u32 = fs::read_to_string(node.rundir.join(format!("{daemon}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(daemon)
            .then_some(pid)
    }

    /// Kills node `index`'s `daemon` with SIGKILL (a crash: no clean shutdown, no BFD
    /// goodbye), by the pid in its pidfile. Returns that pid.
    pub fn kill_node_daemon(&self, index: u8, daemon: &str) -> Result<u32, SandboxError> {
        let pid = self
            .node_daemon_pid(index, daemon)
            .ok_or_else(|| SandboxError::Options(format!("node {index}: {daemon} does not run")))?;
        netns::run(&["kill", "-KILL", &pid.to_string()], CTL_TIMEOUT)?;
        Ok(pid)
    }

    /// Starts node `index`'s `ovs-vswitchd` and `ovn-controller` again where they do not
    /// run (`ovn-sandbox.sh node-start`); `down` stops them as usual.
    pub fn node_start(&self, index: u8) -> Result<String, SandboxError> {
        self.node_or_err(index)?;
        let k = index.to_string();
        self.script_cmd(&["node-start", &k])
    }

    /// Node `index`'s log of `daemon` (`ovs-vswitchd`, `ovn-controller`, `ovsdb-server`).
    pub fn node_log(&self, index: u8, daemon: &str) -> PathBuf {
        let prefix = if index == 1 {
            "node".to_owned()
        } else {
            format!("node{index}")
        };
        self.log_dir().join(format!("{prefix}-{daemon}.log"))
    }

    /// The `EMER` line node `index`'s `ovs-vswitchd` logged since it last started (where an
    /// assertion failure says why it aborted), if any.
    pub fn vswitchd_emer_line(&self, index: u8) -> Option<String> {
        let log = fs::read_to_string(self.node_log(index, "ovs-vswitchd")).ok()?;
        // the log is appended to across restarts: only this run's part counts
        let since_start = log
            .rfind("opened log file")
            .map_or(log.as_str(), |i| &log[i..]);
        since_start
            .lines()
            .rfind(|l| l.contains("|EMER|"))
            .map(str::to_owned)
    }

    /// If node `index`'s `ovs-vswitchd` is dead (OVS 3.1.0's userspace conntrack assertion
    /// aborts it under NATed traffic, docs/performance.md): starts the node's datapath again
    /// as on a rebooted node and waits until every chassis has caught up (hv sync), i.e.
    /// until ovn-controller has installed its flows again. `Ok(None)`: it was running.
    ///
    /// `ovn-controller` is restarted too (killed by pid first if it still runs): a fresh one
    /// installs the flows into the new vswitchd at once, where the old one would first wait
    /// out its reconnect back-off.
    pub fn restart_crashed_vswitchd(
        &self,
        index: u8,
    ) -> Result<Option<VswitchdCrash>, SandboxError> {
        self.node_or_err(index)?;
        if self.node_daemon_pid(index, "ovs-vswitchd").is_some() {
            return Ok(None);
        }
        // read before the restart: the new vswitchd starts a new part of the same log
        let emer = self.vswitchd_emer_line(index);
        if self.node_daemon_pid(index, "ovn-controller").is_some() {
            self.kill_node_daemon(index, "ovn-controller")?;
        }
        self.node_start(index)?;
        self.wait_hv_sync()?;
        Ok(Some(VswitchdCrash { node: index, emer }))
    }

    /// [`Sandbox::restart_crashed_vswitchd`] for each of `nodes`: the crashes found, in node
    /// order (empty when every datapath runs).
    pub fn repair_crashed_vswitchds(
        &self,
        nodes: impl IntoIterator<Item = u8>,
    ) -> Result<Vec<VswitchdCrash>, SandboxError> {
        let mut crashes = Vec::new();
        for k in nodes {
            crashes.extend(self.restart_crashed_vswitchd(k)?);
        }
        Ok(crashes)
    }

    /// Waits until every chassis has caught up with NB (`ovn-nbctl --wait=hv sync`).
    pub fn wait_hv_sync(&self) -> Result<(), SandboxError> {
        self.nbctl(&["--wait=hv", "sync"]).map(drop)
    }

    /// `ovn-sandbox.sh status`.
    pub fn status(&self) -> Result<String, SandboxError> {
        self.script_cmd(&["status"])
    }

    /// Adds a pod: LSP `name` on `switch` with `mac ip` as addresses and port security, a netns
    /// `<node netns>-<name>` with `eth0`, its veth peer on br-int bound to the LSP.
    pub fn add_pod(&self, spec: &PodSpec) -> Result<Pod, SandboxError> {
        let mut args = vec![
            "pod-add",
            spec.name,
            spec.switch,
            spec.mac,
            spec.address,
            spec.gateway,
        ];
        let mtu = spec.mtu.map(|m| m.to_string());
        if let Some(m) = &mtu {
            args.extend(["--mtu", m]);
        }
        self.script_cmd(&args)?;
        Ok(self.pod_guard(spec.name, spec.address, spec.mac))
    }

    /// [`Sandbox::add_pod`] behind node `node`'s br-int (the pod's netns name does not
    /// depend on the node: `<node 1 netns>-<name>`).
    pub fn add_pod_on(&self, node: u8, spec: &PodSpec) -> Result<Pod, SandboxError> {
        self.node_or_err(node)?;
        let k = node.to_string();
        let mut args = vec![
            "pod-add",
            spec.name,
            spec.switch,
            spec.mac,
            spec.address,
            spec.gateway,
            "--node",
            &k,
        ];
        let mtu = spec.mtu.map(|m| m.to_string());
        if let Some(m) = &mtu {
            args.extend(["--mtu", m]);
        }
        self.script_cmd(&args)?;
        Ok(self.pod_guard(spec.name, spec.address, spec.mac))
    }

    /// Adds a host on the sandbox's external network: netns `<node netns>-<name>` with `eth0`,
    /// its veth peer a port of `br-ex` (bridge mapping `external:br-ex`, so a localnet LSP
    /// with `network_name=external` reaches it). No LSP: it stands for the world outside OVN.
    /// With several nodes it hangs on the external segment every node's `br-ex` reaches.
    pub fn add_outside(&self, spec: &OutsideSpec) -> Result<Pod, SandboxError> {
        let mut args = vec!["outside-add", spec.name, spec.mac, spec.address];
        if let Some(gw) = spec.gateway {
            args.push(gw);
        }
        let mtu = spec.mtu.map(|m| m.to_string());
        if let Some(m) = &mtu {
            args.extend(["--mtu", m]);
        }
        self.script_cmd(&args)?;
        Ok(self.pod_guard(spec.name, spec.address, spec.mac))
    }

    fn pod_guard(&self, name: &str, address: &str, mac: &str) -> Pod {
        Pod {
            netns: Netns::existing(&format!("{}-{name}", self.node_netns())),
            name: name.to_string(),
            ip: address.split('/').next().unwrap_or_default().to_string(),
            mac: mac.to_string(),
            script: self.script.clone(),
            dir: self.dir_path.clone(),
            deleted: false,
        }
    }

    /// The pids `up` recorded (read from the pidfiles it listed), to check what runs.
    pub fn recorded_pids(&self) -> Vec<u32> {
        let state = self.dir_path.join("state/daemons");
        let Ok(list) = fs::read_to_string(state) else {
            return Vec::new();
        };
        list.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|pidfile| fs::read_to_string(pidfile).ok())
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }

    /// The last `lines` lines of every log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let Ok(entries) = fs::read_dir(self.log_dir()) else {
            return out;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let text = fs::read_to_string(&p).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} (last {lines} lines)\n", p.display()));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Runs `down` now and returns its output (drop does the same, ignoring errors).
    pub fn down(mut self) -> Result<String, SandboxError> {
        self.down_inner()
    }

    fn down_inner(&mut self) -> Result<String, SandboxError> {
        let Some(dir) = self.dir.take() else {
            return Ok(String::new());
        };
        let out = self.script_cmd(&["down"]);
        // the temp dir (with the logs) goes after down, whatever down said
        drop(dir);
        out
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() && self.dir.is_some() {
            eprintln!(
                "sandbox {} (dir {}): logs at the time of the panic:\n{}",
                self.id(),
                self.dir_path.display(),
                self.log_tails(15)
            );
        }
        if let Err(e) = self.down_inner() {
            eprintln!("sandbox {}: down failed: {e}", self.dir_path.display());
        }
    }
}

/// A pod for [`Sandbox::add_pod`].
#[derive(Debug, Clone, Copy)]
pub struct PodSpec<'a> {
    /// LSP name and netns suffix: 1-40 characters `[A-Za-z0-9_.-]`.
    pub name: &'a str,
    pub switch: &'a str,
    pub mac: &'a str,
    /// `ip/len`, e.g. `10.0.1.11/24`.
    pub address: &'a str,
    pub gateway: &'a str,
    pub mtu: Option<u32>,
}

/// A host on the external network for [`Sandbox::add_outside`].
#[derive(Debug, Clone, Copy)]
pub struct OutsideSpec<'a> {
    /// Netns suffix: 1-40 characters `[A-Za-z0-9_.-]`.
    pub name: &'a str,
    pub mac: &'a str,
    /// `ip/len`, e.g. `172.16.0.50/24`.
    pub address: &'a str,
    /// Default route, if any.
    pub gateway: Option<&'a str>,
    pub mtu: Option<u32>,
}

/// A pod made by [`Sandbox::add_pod`] (or an outside host, [`Sandbox::add_outside`]); derefs to its [`Netns`]. Dropping it runs `pod-del`
/// (nothing left to do if the sandbox went down first).
#[derive(Debug)]
pub struct Pod {
    netns: Netns,
    name: String,
    ip: String,
    mac: String,
    script: PathBuf,
    dir: PathBuf,
    deleted: bool,
}

impl Pod {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn ip(&self) -> &str {
        &self.ip
    }
    pub fn mac(&self) -> &str {
        &self.mac
    }
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
    /// Deletes the pod now (LSP, br-int port, veth, netns).
    pub fn delete(mut self) -> Result<String, SandboxError> {
        self.delete_inner()
    }
    fn delete_inner(&mut self) -> Result<String, SandboxError> {
        if self.deleted {
            return Ok(String::new());
        }
        self.deleted = true;
        let script = self.script.to_string_lossy();
        let dir = self.dir.to_string_lossy();
        netns::run(
            &[
                script.as_ref(),
                "pod-del",
                &self.name,
                "--dir",
                dir.as_ref(),
            ],
            UP_TIMEOUT,
        )
    }
}

impl std::ops::Deref for Pod {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.netns
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Err(e) = self.delete_inner() {
            eprintln!("pod {}: pod-del failed: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
export YCLOUD_SANDBOX_DIR='/tmp/ycsAbC'
export OVN_NB_DB='unix:/tmp/ycsAbC/central/run/nb-1.sock,unix:/tmp/ycsAbC/central/run/nb-2.sock'

# comment
export YCLOUD_SB_TCP=tcp:127.0.0.1:4242
";

    #[test]
    fn env_output_parses_into_variables_quoted_or_not() {
        let env = SandboxEnv::parse(SAMPLE).unwrap();
        assert_eq!(env.get("YCLOUD_SANDBOX_DIR").unwrap(), "/tmp/ycsAbC");
        assert_eq!(env.get("YCLOUD_SB_TCP").unwrap(), "tcp:127.0.0.1:4242");
        assert_eq!(env.vars().count(), 3);
    }

    #[test]
    fn a_comma_separated_remote_splits_into_its_members() {
        let env = SandboxEnv::parse(SAMPLE).unwrap();
        assert_eq!(
            env.list("OVN_NB_DB").unwrap(),
            vec![
                "unix:/tmp/ycsAbC/central/run/nb-1.sock",
                "unix:/tmp/ycsAbC/central/run/nb-2.sock"
            ]
        );
    }

    #[test]
    fn a_missing_variable_is_named_in_the_error() {
        let env = SandboxEnv::parse(SAMPLE).unwrap();
        let err = env.get("YCLOUD_NODE_NETNS").unwrap_err().to_string();
        assert!(err.contains("YCLOUD_NODE_NETNS"), "{err}");
    }

    #[test]
    fn malformed_env_lines_are_rejected_with_their_line_number() {
        for (text, line, reason) in [
            ("export A='x'\nA=b\n", 2, "expected `export KEY=value`"),
            ("export A\n", 1, "no `=`"),
            ("export A-B=c\n", 1, "bad variable name"),
            ("\nexport A='unterminated\n", 2, "unbalanced single quotes"),
            ("export A='a'b'\n", 1, "unbalanced single quotes"),
            ("export A=two words\n", 1, "unquoted value"),
        ] {
            let err = SandboxEnv::parse(text).unwrap_err();
            match &err {
                SandboxError::EnvSyntax { line: l, .. } => assert_eq!(*l, line, "{text:?}: {err}"),
                other => panic!("{text:?}: unexpected error {other}"),
            }
            assert!(err.to_string().contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_sandbox_script_is_found_from_this_crate() {
        let script = sandbox_script();
        assert!(script.is_file(), "{} is missing", script.display());
    }

    #[test]
    fn only_a_three_member_cluster_is_accepted() {
        let err = Sandbox::up(SandboxOptions {
            clustered: Some(5),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("only a 3-member"), "{err}");
    }

    #[test]
    fn node_counts_and_underlay_mtus_out_of_range_are_refused_before_anything_starts() {
        for (opts, want) in [
            (
                SandboxOptions {
                    nodes: Some(5),
                    ..Default::default()
                },
                "1 to 4 nodes",
            ),
            (
                SandboxOptions {
                    nodes: Some(0),
                    ..Default::default()
                },
                "1 to 4 nodes",
            ),
            (
                SandboxOptions {
                    underlay_mtu: Some(1000),
                    ..Default::default()
                },
                "1280..=9000",
            ),
        ] {
            let err = Sandbox::up(opts).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn per_node_env_variables_describe_each_node() {
        let text = "\
export YCLOUD_NODES='2'
export YCLOUD_NODE2_NETNS='ycs-abc.n2'
export YCLOUD_NODE2_CHASSIS='ycs-abc-n2'
export YCLOUD_NODE2_OVS_DB='unix:/tmp/x/node2/run/db.sock'
export YCLOUD_NODE2_RUNDIR='/tmp/x/node2/run'
export YCLOUD_NODE2_ENCAP_IP='192.168.100.2'
";
        let sb = Sandbox {
            env: SandboxEnv::parse(text).unwrap(),
            script: sandbox_script(),
            nb_unix: vec![],
            nb_tcp: vec![],
            dir: None,
            dir_path: PathBuf::from("/nonexistent"),
            up_output: String::new(),
        };
        assert_eq!(sb.nodes(), 2);
        let n2 = sb.node(2).unwrap();
        assert_eq!(n2.netns, "ycs-abc.n2");
        assert_eq!(n2.chassis, "ycs-abc-n2");
        assert_eq!(n2.encap_ip, "192.168.100.2");
        assert_eq!(n2.rundir, Path::new("/tmp/x/node2/run"));
        assert_eq!(sb.node(3), None);
        assert_eq!(sb.node(0), None);
        // node 1's variables are missing from this sample: no half-filled node
        assert_eq!(sb.node(1), None);
    }
}
