//! The end-to-end harness: the real product on a real OVN sandbox.
//!
//! A [`Cluster`] is one `hack/ovn-sandbox.sh` sandbox (NB, SB, northd, OVS on the userspace
//! datapath, ovn-controller), `ycloud-controller` in manifest mode on a temp directory,
//! `ycloud-cnid` in the sandbox's node namespace (as a hostNetwork DaemonSet pod runs), and
//! "pods": network namespaces whose network the real `ycloud-cni` plugin builds, called the
//! way a container runtime calls it. Nothing is faked; `hack/demo.sh` does the same in shell.
//!
//! Every process and namespace is stopped or deleted by a guard, also when a test panics;
//! then the controller's and the daemon's log tails and the NB rows are printed.

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
}

/// How a [`Cluster`] starts.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Manifests from `hack/demo/manifests` to copy (file names), `@CHASSIS@` replaced.
    pub demo_manifests: Vec<&'static str>,
    /// `--offload` for the controller.
    pub offload: bool,
}

/// The whole product on one sandbox. Field order is drop order: servers, pods (after a CNI
/// DEL each, in `Drop`), the daemon, the controller, the sandbox.
pub struct Cluster {
    servers: BTreeMap<String, Background>,
    pods: BTreeMap<String, PodNet>,
    outside: Option<Pod>,
    cnid: Option<Daemon>,
    controller: Option<Daemon>,
    controller_args: Vec<String>,
    cni_conf: String,
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
    /// answering the plugin's STATUS.
    pub fn start(options: &ClusterOptions) -> Cluster {
        let bins = bins();
        let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
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
            cnid: None,
            controller: None,
            controller_args: Vec::new(),
            cni_conf: String::new(),
            manifests,
            work,
            sb,
        };
        for f in &options.demo_manifests {
            cluster.copy_demo_manifest(f);
        }
        let mut args = vec![
            format!("--source=dir:{}", cluster.manifests.path().display()),
            format!("--nb={}", cluster.sb.nb_unix()),
            "--poll-ms=100".into(),
            format!("--svcgw-chassis={}:100", cluster.sb.chassis()),
        ];
        if options.offload {
            args.push("--offload".into());
        }
        cluster.controller_args = args;
        cluster.start_controller();
        cluster.wait_synced();

        let sock = cluster.work.path().join("cni.sock");
        let cnid_args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            cluster.sb.node_netns().into(),
            bins.cnid.to_string_lossy().into_owned(),
            format!("--socket={}", sock.display()),
            format!("--ovs-db={}", cluster.sb.ovs_db_unix()),
            "--bridge=br-int".into(),
            format!("--status-dir={}", cluster.status_dir().display()),
            format!("--node-name={}", cluster.sb.chassis()),
            "--mgmt-interval-ms=500".into(),
            "--annotation-timeout-ms=30000".into(),
            "--ovn-installed-timeout-ms=30000".into(),
        ];
        // `ip netns exec` execs the daemon after setns: the child's pid is the daemon's
        // its own state (pods' netns for probes) in the test's dir, not the host's
        // /var/lib/ycloud/cnid that parallel tests would share; by environment, which a
        // daemon without the setting ignores
        let state = cluster.work.path().join("cnid-state");
        let mut cnid = Daemon::spawn(
            "ycloud-cnid",
            "ip",
            &cnid_args,
            &[("YCLOUD_STATE_DIR", state.to_string_lossy().into_owned())],
            &cluster.work.path().join("cnid.log"),
        );
        cluster.cni_conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"ycloud","type":"ycloud-cni","daemonSocket":"{}"}}"#,
            sock.display()
        );
        wait_for(
            "ycloud-cnid to answer STATUS",
            Duration::from_secs(20),
            || {
                assert!(
                    cnid.running(),
                    "ycloud-cnid exited:\n{}",
                    cluster.log_tail("cnid.log", 20)
                );
                cluster.cni("STATUS", None).ok()
            },
        );
        cluster.cnid = Some(cnid);
        cluster
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

    /// Writes a manifest file atomically (a temp file renamed: the controller never reads a
    /// half-written file), with `@CHASSIS@` replaced.
    pub fn write_manifest(&self, name: &str, text: &str) {
        let text = text.replace("@CHASSIS@", self.sb.chassis());
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

    /// Runs the CNI plugin as a container runtime does: `CNI_*` in a clean environment, the
    /// network configuration on stdin. Returns stdout.
    fn cni(&self, command: &str, pod: Option<(&str, &str, &str)>) -> Result<String, String> {
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
            .write_all(self.cni_conf.as_bytes())
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

    /// A pod `namespace/name` (its manifest must exist): a netns, then CNI ADD. Returns its
    /// address from the CNI result.
    pub fn add_pod(&mut self, namespace: &str, name: &str) -> String {
        let netns_name = format!("ycd{}-{name}", self.sb.id());
        let netns = Netns::create(&netns_name).expect("pod netns");
        let t0 = Instant::now();
        let out = self
            .cni("ADD", Some((namespace, name, &netns_name)))
            .unwrap_or_else(|e| panic!("CNI ADD {namespace}/{name}: {e}\n{}", self.diagnostics()));
        let result: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("CNI ADD {name}: result is not JSON ({e}): {out}"));
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("CNI ADD {name}: no address in {out}"))
            .to_string();
        eprintln!(
            "e2e: pod {namespace}/{name} {ip} (ADD {:.2} s)",
            t0.elapsed().as_secs_f64()
        );
        self.pods.insert(
            name.to_string(),
            PodNet {
                name: name.to_string(),
                namespace: namespace.to_string(),
                ip: ip.clone(),
                netns,
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

    /// What a failure prints: the controller's and the daemon's log tails, the service
    /// statuses and the NB load balancers.
    pub fn diagnostics(&self) -> String {
        let statuses = fs::read_dir(self.status_dir().join("YusurService"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|ns| fs::read_dir(ns.path()).into_iter().flatten().flatten())
            .map(|f| fs::read_to_string(f.path()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n");
        format!(
            "=== controller.log (last 30 lines)\n{}\n=== cnid.log (last 20 lines)\n{}\n\
             === service status files\n{statuses}\n=== NB Load_Balancer\n{}",
            self.log_tail("controller.log", 30),
            self.log_tail("cnid.log", 20),
            self.nb_lbs()
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
            if let Err(e) = self.cni("DEL", Some((&p.namespace, &p.name, p.netns.name()))) {
                eprintln!("e2e: {e}");
            }
        }
        drop(pods);
        self.outside = None;
        self.cnid = None;
        self.controller = None;
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
