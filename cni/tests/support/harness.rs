//! Shared by the CNI tests: a sandbox node with `ycloud-cnid` running in its netns (like a
//! DaemonSet pod with hostNetwork), and a way to run the real plugin binary.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use ycloud_testsupport::netns::Netns;
use ycloud_testsupport::sandbox::{Sandbox, SandboxOptions};

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_ycloud-cni");
pub const DAEMON: &str = env!("CARGO_BIN_EXE_ycloud-cnid");

/// What one plugin run printed and returned.
#[derive(Debug, Clone)]
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Json {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}): {self:?}"))
    }
    /// The CNI error code, asserting the run failed with a spec error object.
    pub fn error_code(&self) -> u64 {
        assert_ne!(self.status, 0, "expected a failure: {self:?}");
        assert!(
            !self.stderr.contains("panicked"),
            "the plugin panicked: {self:?}"
        );
        let j = self.json();
        assert!(
            j["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "error without msg: {j}"
        );
        assert!(j["cniVersion"].is_string(), "error without cniVersion: {j}");
        j["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("error without code: {j}"))
    }
    pub fn ok(&self) -> &Self {
        assert_eq!(self.status, 0, "plugin failed: {self:?}");
        self
    }
}

/// Runs the plugin with exactly `env` (nothing inherited but PATH) and `stdin`.
pub fn plugin(env: &[(&str, &str)], stdin: &[u8]) -> Run {
    let mut cmd = Command::new(PLUGIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn ycloud-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait ycloud-cni");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The daemon process; killed by pid and reaped on drop.
pub struct DaemonProc {
    child: Option<Child>,
    pub log: PathBuf,
}

impl DaemonProc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A sandbox node with a status dir and (optionally) a running daemon.
pub struct Node {
    pub daemon: Option<DaemonProc>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub sb: Sandbox,
    pub ovn_installed_timeout_ms: u64,
    pub annotation_timeout_ms: u64,
    /// 0: the daemon does not manage management ports.
    pub mgmt_interval_ms: u64,
    /// More daemon flags (e.g. smartnic mode).
    pub extra_args: Vec<String>,
    restarts: u32,
}

impl Node {
    pub fn up() -> Node {
        let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("run/cni.sock");
        Node {
            daemon: None,
            socket,
            dir,
            sb,
            ovn_installed_timeout_ms: 20_000,
            annotation_timeout_ms: 5_000,
            mgmt_interval_ms: 0,
            extra_args: Vec::new(),
            restarts: 0,
        }
    }

    pub fn status_dir(&self) -> PathBuf {
        self.dir.path().join("status")
    }

    /// Starts `ycloud-cnid` inside the node netns and waits until it answers STATUS.
    pub fn start_daemon(&mut self) {
        let (socket, args) = (self.socket.clone(), self.extra_args.clone());
        let d = self.spawn_daemon(&socket, &args);
        self.daemon = Some(d);
    }

    /// Starts another `ycloud-cnid` in the node netns on `socket` with the node's settings
    /// plus `extra_args` (e.g. the DPU side), and waits until it answers STATUS.
    pub fn spawn_daemon(&mut self, socket: &Path, extra_args: &[String]) -> DaemonProc {
        self.restarts += 1;
        let log = self.dir.path().join(format!("cnid-{}.log", self.restarts));
        let logf = fs::File::create(&log).expect("daemon log");
        let child = Command::new("ip")
            .args(["netns", "exec", self.sb.node_netns(), DAEMON])
            .arg("--socket")
            .arg(socket)
            .args(["--ovs-db", self.sb.ovs_db_unix(), "--bridge", "br-int"])
            .arg("--status-dir")
            .arg(self.status_dir())
            .args(["--node-name", self.sb.chassis()])
            .arg(format!(
                "--annotation-timeout-ms={}",
                self.annotation_timeout_ms
            ))
            .arg(format!(
                "--ovn-installed-timeout-ms={}",
                self.ovn_installed_timeout_ms
            ))
            .arg(format!("--mgmt-interval-ms={}", self.mgmt_interval_ms))
            .args(extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn ycloud-cnid");
        let d = DaemonProc {
            child: Some(child),
            log,
        };
        let conf = json!({"cniVersion": "1.1.0", "name": "ycloud", "type": "ycloud-cni", "daemonSocket": socket});
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if socket.exists()
                && plugin(&[("CNI_COMMAND", "STATUS")], conf.to_string().as_bytes()).status == 0
            {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "ycloud-cnid did not come up: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    pub fn daemon_log(&self) -> String {
        self.daemon
            .as_ref()
            .map(DaemonProc::log_text)
            .unwrap_or_default()
    }

    /// Writes the pod's `ycloud.io/network` like the controller (temp file + rename).
    pub fn annotate(&self, ns: &str, name: &str, net: &Json) {
        let d = self.status_dir().join("pods").join(ns);
        fs::create_dir_all(&d).expect("status dir");
        let tmp = d.join(format!(".{name}.tmp"));
        fs::write(&tmp, serde_json::to_vec(net).expect("json")).expect("write annotation");
        fs::rename(&tmp, d.join(format!("{name}.json"))).expect("rename annotation");
    }

    /// The LSP the controller would create for a pod.
    pub fn lsp(&self, switch: &str, name: &str, mac: &str, ip: &str) {
        let addr = format!("{mac} {ip}");
        self.sb
            .nbctl(&[
                "--may-exist",
                "lsp-add",
                switch,
                name,
                "--",
                "lsp-set-addresses",
                name,
                &addr,
                "--",
                "lsp-set-port-security",
                name,
                &addr,
            ])
            .expect("lsp-add");
    }

    /// Runs the plugin against this node's daemon.
    pub fn cni(
        &self,
        command: &str,
        container: &str,
        netns: Option<&Path>,
        ifname: &str,
        pod: Option<(&str, &str)>,
        extra: Json,
    ) -> Run {
        let mut conf = json!({
            "cniVersion": "1.1.0",
            "name": "ycloud",
            "type": "ycloud-cni",
            "daemonSocket": self.socket,
        });
        if let (Some(o), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        let args = pod
            .map(|(ns, n)| format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={n};K8S_POD_INFRA_CONTAINER_ID={container}"))
            .unwrap_or_default();
        let netns_s = netns.map(|p| p.display().to_string()).unwrap_or_default();
        let mut env = vec![
            ("CNI_COMMAND", command),
            ("CNI_PATH", "/opt/cni/bin"),
            ("CNI_ARGS", args.as_str()),
        ];
        if !container.is_empty() {
            env.push(("CNI_CONTAINERID", container));
        }
        if netns.is_some() {
            env.push(("CNI_NETNS", netns_s.as_str()));
        }
        if !ifname.is_empty() {
            env.push(("CNI_IFNAME", ifname));
        }
        plugin(&env, conf.to_string().as_bytes())
    }
}

/// A pod network namespace made by the test (what the runtime would create).
pub fn pod_netns(sb: &Sandbox, name: &str) -> Netns {
    Netns::create(&format!("yct{}-{name}", sb.id())).expect("pod netns")
}

pub fn netns_path(ns: &Netns) -> PathBuf {
    PathBuf::from("/run/netns").join(ns.name())
}

/// An IPv4 `ycloud.io/network` object.
pub fn network(lsp: &str, mac: &str, ip_cidr: &str, gw: &str) -> Json {
    json!({
        "vpc": "v1", "subnet": "s1", "logicalSwitch": "ls1", "logicalSwitchPort": lsp,
        "mac": mac, "ips": [ip_cidr], "gateways": [gw], "routes": [], "mtu": 1400
    })
}

/// ICMP echo from `ns` to `dst` until the first reply, one request every 250 ms for 2 s (as
/// `ping -w 2` does; python3 raw socket: `ping` is not installed everywhere). One request
/// alone can be lost to a link that has just come up (a representor's carrier follows its
/// VF's, and the kernel turns the queue on asynchronously): seen once in CI.
pub fn ping(ns: &Netns, dst: &str) -> Result<String, String> {
    ns.exec_timeout(
        &["python3", "-c", PING_PY, dst, "2"],
        Duration::from_secs(10),
    )
    .map_err(|e| e.to_string())
}

/// One ICMP echo request, one reply within 2 s: for a pod whose ADD promises a working
/// network when it returns (veth mode: both ends are up before OVN says installed).
pub fn ping_once(ns: &Netns, dst: &str) -> Result<String, String> {
    ns.exec_timeout(
        &["python3", "-c", PING_PY, dst, "2", "once"],
        Duration::from_secs(10),
    )
    .map_err(|e| e.to_string())
}

const PING_PY: &str = r#"
import os, select, socket, struct, sys, time
dst, timeout = sys.argv[1], float(sys.argv[2])
once = len(sys.argv) > 3 and sys.argv[3] == "once"
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
ident = os.getpid() & 0xffff
payload = b"ycloud-ping"
def echo(seq):
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, csum(hdr + payload), ident, seq) + payload
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
t0 = time.time()
seq, next_send = 0, t0
while True:
    now = time.time()
    if now - t0 >= timeout:
        sys.exit("no echo reply from %s within %.1fs (%d requests)" % (dst, timeout, seq))
    if now >= next_send:
        seq += 1
        s.sendto(echo(seq), (dst, 0))
        next_send = t0 + timeout if once else now + 0.25
    r, _, _ = select.select([s], [], [], max(0.0, min(next_send, t0 + timeout) - time.time()))
    if not r:
        continue
    data, addr = s.recvfrom(2048)
    ihl = (data[0] & 0xf) * 4
    t, c, _, i, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
    if addr[0] == dst and t == 0 and i == ident:
        print("reply from %s in %.1f ms after %d requests" % (dst, (time.time() - t0) * 1000, seq))
        break
"#;
