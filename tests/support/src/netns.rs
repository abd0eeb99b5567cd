//! Network namespaces as test hosts: create one (optionally with a veth to another namespace),
//! run commands in it, run a small HTTP or TCP echo server in it, and fetch from it with curl.
//!
//! Test support may shell out to `ip`/`ethtool`/`curl` (the product code uses netlink): what
//! matters here is that every namespace and process a test creates is removed by a guard's
//! `Drop`, also when the test panics, and that no command can hang a test (each one runs under
//! coreutils `timeout`).

use std::fs;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::sandbox::SandboxError;

/// Default bound for one command in a namespace (none of ours should take more than a second).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails with a clear message unless the effective user is root: namespaces and OVS need it, and
/// the tests that use them must run (CI is root) rather than skip silently.
pub fn require_root(what: &str) -> Result<(), SandboxError> {
    let status = fs::read_to_string("/proc/self/status").map_err(|source| SandboxError::Io {
        what: "reading /proc/self/status".into(),
        source,
    })?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid == "0" {
        Ok(())
    } else {
        Err(SandboxError::NotRoot {
            what: what.to_string(),
            euid: euid.to_string(),
        })
    }
}

/// Runs `argv` with a time bound and returns its stdout; stderr is in the error when it fails.
pub fn run(argv: &[&str], timeout: Duration) -> Result<String, SandboxError> {
    run_with_env(argv, &[], timeout)
}

/// [`run`] with extra environment variables.
pub fn run_with_env(
    argv: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<String, SandboxError> {
    let command = shell_words(argv);
    let Some((program, args)) = argv.split_first() else {
        return Err(SandboxError::Spawn {
            command,
            source: std::io::Error::other("empty command line"),
        });
    };
    // `timeout` sends TERM at the bound and KILL 5 s later; it exits 124 when the bound hit
    let secs = format!("{:.1}", timeout.as_secs_f64().max(0.1));
    let output = Command::new("timeout")
        .args(["--kill-after=5", &secs, program])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SandboxError::Spawn {
            command: command.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    match output.status.code() {
        Some(0) => Ok(stdout),
        Some(124) | Some(137) => Err(SandboxError::Timeout {
            command,
            timeout,
            stderr,
        }),
        _ => Err(SandboxError::Failed {
            command,
            status: output.status.to_string(),
            stdout,
            stderr,
        }),
    }
}

/// `argv` joined for messages, quoting the words that need it.
pub(crate) fn shell_words(argv: &[&str]) -> String {
    argv.iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c))
            {
                w.to_string()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A veth from a new namespace to another namespace (or the root namespace), for
/// [`Netns::create_with_veth`].
#[derive(Debug, Clone)]
pub struct VethSpec {
    /// Interface name inside the new namespace (e.g. `eth0`).
    pub ifname: String,
    /// Name of the other end (at most 15 bytes; unique in its namespace).
    pub peer_name: String,
    /// Namespace of the other end; `None` = the root namespace (only for test-private names:
    /// the root namespace is shared by every test).
    pub peer_netns: Option<String>,
    /// MAC of `ifname`; `None` keeps the kernel's random one.
    pub mac: Option<String>,
    /// Address of `ifname` with prefix length, e.g. `172.16.0.50/24`.
    pub address: Option<String>,
    /// Default route via this address.
    pub gateway: Option<String>,
    pub mtu: Option<u32>,
}

/// A network namespace. Created by [`Netns::create`] it is deleted on drop; attached by
/// [`Netns::existing`] (e.g. a pod made by `hack/ovn-sandbox.sh`) it is left alone.
#[derive(Debug)]
pub struct Netns {
    name: String,
    owned: bool,
}

impl Netns {
    /// Creates namespace `name` with `lo` up and IPv6 off (no stray router solicitations in
    /// datapath dumps). Namespace names are global: include something unique per test.
    pub fn create(name: &str) -> Result<Netns, SandboxError> {
        require_root(&format!("creating network namespace {name}"))?;
        run(&["ip", "netns", "add", name], COMMAND_TIMEOUT)?;
        let ns = Netns {
            name: name.to_string(),
            owned: true,
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])?;
        Ok(ns)
    }

    /// Creates namespace `name` with a veth to another namespace, TX checksum offload off on
    /// both ends (the userspace datapath cannot complete partial checksums: TCP would fail).
    pub fn create_with_veth(name: &str, veth: &VethSpec) -> Result<Netns, SandboxError> {
        let ns = Netns::create(name)?;
        let mtu = veth.mtu.unwrap_or(1500).to_string();
        let mut add = vec!["ip", "link", "add", &veth.peer_name];
        if let Some(peer_ns) = &veth.peer_netns {
            add.extend(["netns", peer_ns]);
        }
        add.extend(["mtu", &mtu, "type", "veth", "peer", "name", &veth.ifname]);
        add.extend(["netns", name, "mtu", &mtu]);
        run(&add, COMMAND_TIMEOUT)?;
        let peer = |argv: &[&str]| -> Result<String, SandboxError> {
            match &veth.peer_netns {
                Some(p) => {
                    let mut full = vec!["ip", "netns", "exec", p.as_str()];
                    full.extend_from_slice(argv);
                    run(&full, COMMAND_TIMEOUT)
                }
                None => run(argv, COMMAND_TIMEOUT),
            }
        };
        ns.exec(&["ethtool", "-K", &veth.ifname, "tx", "off"])?;
        peer(&["ethtool", "-K", &veth.peer_name, "tx", "off"])?;
        if let Some(mac) = &veth.mac {
            ns.exec(&["ip", "link", "set", &veth.ifname, "address", mac])?;
        }
        if let Some(addr) = &veth.address {
            ns.exec(&["ip", "addr", "add", addr, "dev", &veth.ifname])?;
        }
        ns.exec(&["ip", "link", "set", &veth.ifname, "up"])?;
        peer(&["ip", "link", "set", &veth.peer_name, "up"])?;
        if let Some(gw) = &veth.gateway {
            ns.exec(&["ip", "route", "add", "default", "via", gw])?;
        }
        Ok(ns)
    }

    /// Attaches to a namespace someone else owns; dropping the guard does not delete it.
    pub fn existing(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
            owned: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `argv` in the namespace (`ip netns exec`), bounded by [`COMMAND_TIMEOUT`].
    pub fn exec(&self, argv: &[&str]) -> Result<String, SandboxError> {
        self.exec_timeout(argv, COMMAND_TIMEOUT)
    }

    /// Runs `argv` in the namespace with a time bound.
    pub fn exec_timeout(&self, argv: &[&str], timeout: Duration) -> Result<String, SandboxError> {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(argv);
        run(&full, timeout)
    }

    /// Starts `argv` in the namespace in the background; the returned guard kills it (by pid).
    pub fn spawn(&self, what: &str, argv: &[&str]) -> Result<Background, SandboxError> {
        let command = shell_words(argv);
        // `ip netns exec` execs the program after setns: the child's pid is the program's pid
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SandboxError::Spawn { command, source })?;
        Ok(Background {
            child: Some(child),
            what: format!("{what} in netns {}", self.name),
        })
    }

    /// Starts an HTTP server on `0.0.0.0:port` that answers every GET with
    /// `"<label> from=<client address it saw>\n"`, and waits until it listens.
    pub fn http_server(&self, label: &str, port: u16) -> Result<Background, SandboxError> {
        let port_s = port.to_string();
        let server = self.spawn(
            &format!("HTTP server {label} on :{port}"),
            &["python3", "-c", HTTP_SERVER_PY, label, &port_s],
        )?;
        self.wait_listening(server, port)
    }

    /// Starts a TCP echo server on `0.0.0.0:port` (echoes each connection's bytes back) and
    /// waits until it listens.
    pub fn tcp_echo_server(&self, port: u16) -> Result<Background, SandboxError> {
        let port_s = port.to_string();
        let server = self.spawn(
            &format!("TCP echo server on :{port}"),
            &["python3", "-c", TCP_ECHO_PY, &port_s],
        )?;
        self.wait_listening(server, port)
    }

    fn wait_listening(
        &self,
        mut server: Background,
        port: u16,
    ) -> Result<Background, SandboxError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let filter = format!("sport = :{port}");
        loop {
            if let Some(status) = server.exited() {
                let stderr = server.take_stderr();
                return Err(SandboxError::ServerExited {
                    what: server.what.clone(),
                    status,
                    stderr,
                });
            }
            let listening = self.exec(&["ss", "-Hltn", &filter]).unwrap_or_default();
            if !listening.trim().is_empty() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                let what = server.what.clone();
                drop(server);
                return Err(SandboxError::NotListening { what, port });
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// `curl` from the namespace; returns the body. `timeout` bounds the whole transfer.
    pub fn http_get(&self, url: &str, timeout: Duration) -> Result<String, SandboxError> {
        let max_time = format!("{:.1}", timeout.as_secs_f64());
        self.exec_timeout(
            &[
                "curl",
                "-sS",
                "--fail",
                "--noproxy",
                "*",
                "--max-time",
                &max_time,
                url,
            ],
            timeout + Duration::from_secs(5),
        )
    }

    /// Sends `payload` to `host:port` over TCP from the namespace and returns what came back
    /// before the peer closed (or `timeout` passed).
    pub fn tcp_send(
        &self,
        host: &str,
        port: u16,
        payload: &str,
        timeout: Duration,
    ) -> Result<String, SandboxError> {
        let port_s = port.to_string();
        let secs = format!("{:.1}", timeout.as_secs_f64());
        self.exec_timeout(
            &[
                "python3",
                "-c",
                TCP_CLIENT_PY,
                host,
                &port_s,
                payload,
                &secs,
            ],
            timeout + Duration::from_secs(5),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = run(&["ip", "netns", "del", &self.name], COMMAND_TIMEOUT) {
            eprintln!("netns guard: could not delete netns {}: {e}", self.name);
        }
    }
}

/// A process started in a namespace; killed (SIGKILL, by pid) and reaped on drop.
#[derive(Debug)]
pub struct Background {
    child: Option<Child>,
    what: String,
}

impl Background {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has ended.
    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    fn take_stderr(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(err) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = err.read_to_string(&mut s);
        }
        s.trim().to_string()
    }

    /// Stops the process now (what drop does).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // kill() is SIGKILL on exactly this pid; wait() reaps it, so no zombie outlives the test
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

// Why python3 servers: they come with the OVS packages' dependencies, need no build, and report
// the client address they saw, which is how tests tell SNAT from no SNAT.
const HTTP_SERVER_PY: &str = r#"
import http.server, sys
name, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(s):
        b = ("%s from=%s\n" % (name, s.client_address[0])).encode()
        s.send_response(200)
        s.send_header("Content-Length", str(len(b)))
        s.end_headers()
        s.wfile.write(b)
    def log_message(s, *a):
        pass
http.server.ThreadingHTTPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
"#;

const TCP_ECHO_PY: &str = r#"
import socketserver, sys
class H(socketserver.BaseRequestHandler):
    def handle(s):
        while True:
            d = s.request.recv(65536)
            if not d:
                return
            s.request.sendall(d)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

const TCP_CLIENT_PY: &str = r#"
import socket, sys
host, port, payload, t = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
s = socket.create_connection((host, port), timeout=t)
s.sendall(payload)
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    got += d
sys.stdout.write(got.decode(errors="replace"))
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_fails_reports_its_status_and_stderr() {
        let err = run(&["sh", "-c", "echo oops >&2; exit 3"], COMMAND_TIMEOUT).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("oops"), "{msg}");
        assert!(msg.contains("sh -c 'echo oops >&2; exit 3'"), "{msg}");
    }

    #[test]
    fn a_command_that_hangs_is_stopped_at_its_timeout() {
        let t0 = Instant::now();
        let err = run(&["sleep", "30"], Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, SandboxError::Timeout { .. }), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_successful_command_returns_its_stdout() {
        assert_eq!(run(&["echo", "hi"], COMMAND_TIMEOUT).unwrap(), "hi\n");
    }

    #[test]
    fn shell_words_quotes_only_what_needs_quoting() {
        assert_eq!(
            shell_words(&[
                "ovn-nbctl",
                "--db=unix:/a/b.sock",
                "lsp-set-addresses",
                "p",
                "0a:00 10.0.0.1"
            ]),
            "ovn-nbctl --db=unix:/a/b.sock lsp-set-addresses p '0a:00 10.0.0.1'"
        );
        assert_eq!(shell_words(&["it's"]), r"'it'\''s'");
    }
}
