//! A bare `ovsdb-server` per test: standalone ([`OvsdbServer`]) or an N-member RAFT cluster
//! ([`OvsdbCluster`]), with a real OVN/OVS schema, in a temp dir, on a unix socket and a
//! loopback TCP port.
//!
//! Why these choices:
//! - The server runs as our direct child (no `--detach`), so we hold its pid from `spawn` and
//!   `Drop` can SIGKILL and reap exactly that process, also when the test panics.
//! - The standalone TCP port comes from the kernel (`ptcp:0:127.0.0.1`) and is read back from
//!   the server's log line `listening on port N`: no probe-then-bind race with tests running
//!   in parallel. A restart reuses that port (the server sets `SO_REUSEADDR`), so a client
//!   configured with `tcp_remote()` reconnects to the same address.
//! - RAFT member addresses must be known before the servers start (they are written into
//!   the db files), so those ports are bind-probed from a random spot in a range below the
//!   kernel's ephemeral range, and the whole cluster start is retried on a clash.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long we wait for a server to come up (socket present, port known) or a cluster to
/// elect a leader before giving up with an error. Generous because 4 helpers share 2 cores.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which schema the database is created from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaFile {
    /// `/usr/share/ovn/ovn-nb.ovsschema` (OVN_Northbound).
    Nb,
    /// `/usr/share/ovn/ovn-sb.ovsschema` (OVN_Southbound).
    Sb,
    /// `/usr/share/openvswitch/vswitch.ovsschema` (Open_vSwitch).
    Vswitch,
    /// Any other `.ovsschema` file.
    Path(PathBuf),
}

impl SchemaFile {
    pub fn path(&self) -> PathBuf {
        match self {
            SchemaFile::Nb => PathBuf::from("/usr/share/ovn/ovn-nb.ovsschema"),
            SchemaFile::Sb => PathBuf::from("/usr/share/ovn/ovn-sb.ovsschema"),
            SchemaFile::Vswitch => PathBuf::from("/usr/share/openvswitch/vswitch.ovsschema"),
            SchemaFile::Path(p) => p.clone(),
        }
    }

    /// The parsed schema JSON.
    pub fn json(&self) -> io::Result<serde_json::Value> {
        let path = self.path();
        let text = fs::read_to_string(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("reading schema {}: {e}", path.display()))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!("parsing schema {}: {e}", path.display()),
            )
        })
    }
}

/// One `ovsdb-server` process serving one database from a file in a temp dir.
///
/// Drop kills (SIGKILL) and reaps the process; the temp dir goes with it.
pub struct OvsdbServer {
    dir: TempDir,
    schema: SchemaFile,
    db_name: String,
    tables: Vec<String>,
    /// Port of the `ptcp:` remote, 0 until the first start has read it from the log.
    port: u16,
    /// Extra `--remote=` / other options (e.g. TLS) given at start, repeated at restart.
    extra_args: Vec<String>,
    child: Option<Child>,
    /// Which start this is, so each run gets its own log file to read the port from.
    generation: u32,
}

impl std::fmt::Debug for OvsdbServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OvsdbServer")
            .field("dir", &self.dir.path())
            .field("db_name", &self.db_name)
            .field("port", &self.port)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish()
    }
}

impl OvsdbServer {
    /// Creates a standalone database from `schema` and starts a server on a unix socket and
    /// a free loopback TCP port.
    pub fn start(schema: SchemaFile) -> io::Result<Self> {
        Self::start_with_args(schema, &[])
    }

    /// Like [`OvsdbServer::start`], with extra `ovsdb-server` arguments (for example
    /// `--remote=pssl:0:127.0.0.2 --private-key=… --certificate=… --ca-cert=…`). They are
    /// repeated at every restart. The port of an extra remote given as port 0 is read back
    /// with [`OvsdbServer::listening_port`]; bind it to another loopback address than
    /// 127.0.0.1 (e.g. 127.0.0.2), because the server's log line names only the address.
    pub fn start_with_args(schema: SchemaFile, extra_args: &[&str]) -> io::Result<Self> {
        let schema_json = schema.json()?;
        let db_name = schema_name(&schema_json, &schema.path())?;
        let tables = schema_tables(&schema_json);
        let dir = tempfile::Builder::new().prefix("ovsdb-").tempdir()?;
        let db = dir.path().join("db.db");
        run_tool(&["create", path_str(&db)?, path_str(&schema.path())?])?;
        let mut server = OvsdbServer {
            dir,
            schema,
            db_name,
            tables,
            port: 0,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
            generation: 0,
        };
        server.spawn()?;
        Ok(server)
    }

    fn sock_path(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }

    fn ctl_path(&self) -> PathBuf {
        self.dir.path().join("db.ctl")
    }

    fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("ovsdb-server.{}.log", self.generation))
    }

    /// The temp dir holding the db file, socket, control socket and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn schema(&self) -> &SchemaFile {
        &self.schema
    }

    fn spawn(&mut self) -> io::Result<()> {
        self.generation += 1;
        let sock = self.sock_path();
        // A SIGKILLed server leaves its socket file behind; remove it so "socket exists"
        // means "the new server is listening".
        let _ = fs::remove_file(&sock);
        let log = self.log_path();
        let db = self.dir.path().join("db.db");
        let mut cmd = Command::new("ovsdb-server");
        cmd.arg("--no-chdir")
            .arg(format!("--unixctl={}", self.ctl_path().display()))
            .arg(format!("--log-file={}", log.display()))
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--remote=ptcp:{}:127.0.0.1", self.port))
            .args(&self.extra_args)
            .arg(&db);
        let child = spawn_logged(cmd, self.dir.path(), self.generation)?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "ovsdb-server exited at start with {status}; log {}:\n{}",
                    log.display(),
                    read_logs(self.dir.path(), self.generation)
                )));
            }
            // The socket file exists from the server's bind(), before its listen(): a
            // connect until then is refused (seen: `ovn-nbctl init` right after start, now
            // and then under load). A successful connect says the unix remote is up.
            if sock.exists() && std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                // The server logs "listening on port N" only for port 0; on a restart with
                // the known port, a successful connect says it is up.
                if self.port != 0 {
                    if port_is_listening(self.port) {
                        return Ok(());
                    }
                } else if let Some(p) = listening_port_in(&log, "127.0.0.1") {
                    self.port = p;
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "ovsdb-server did not come up within {START_TIMEOUT:?}; log:\n{}",
                        read_logs(self.dir.path(), self.generation)
                    ),
                ));
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// `unix:/tmp/…/db.sock`
    pub fn unix_remote(&self) -> String {
        format!("unix:{}", self.sock_path().display())
    }

    /// `tcp:127.0.0.1:PORT` (stable across [`OvsdbServer::restart`]).
    pub fn tcp_remote(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port the current server run logged for a passive remote bound to `addr` with
    /// port 0 (`"127.0.0.2"` for `pssl:0:127.0.0.2`).
    pub fn listening_port(&self, addr: &str) -> Option<u16> {
        listening_port_in(&self.log_path(), addr)
    }

    /// Pid of the running server; 0 after [`OvsdbServer::kill`].
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// "OVN_Northbound", "Open_vSwitch", …
    pub fn db_name(&self) -> &str {
        &self.db_name
    }

    /// SIGKILL (no clean shutdown) and reap; the db file stays for [`OvsdbServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same db file, socket path and TCP port (kills the
    /// current one first if it is still running).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Runs `ovsdb-client` against this server over its unix socket and returns stdout.
    ///
    /// `args` is what you would type after `ovsdb-client`, without the server: leading
    /// `--options` first, then the command, then its arguments; the server is inserted right
    /// after the command. Example: `ovsdb_client(&["transact", r#"["OVN_Northbound", …]"#])`.
    pub fn ovsdb_client(&self, args: &[&str]) -> io::Result<String> {
        ovsdb_client_at(&self.unix_remote(), args)
    }

    /// The whole database contents as `{"Table": {"<uuid>": {"column": <wire value>, …}}}`
    /// (every table of the schema, empty ones as `{}`, without `_uuid`/`_version`), i.e. the
    /// shape of monitor "new" rows, for "cache equals server" checks. Panics on failure: it
    /// is a test assertion helper.
    pub fn dump_json(&self) -> serde_json::Value {
        dump_json_at(&self.unix_remote(), &self.db_name, &self.tables)
            .unwrap_or_else(|e| panic!("dump_json of {}: {e}", self.unix_remote()))
    }
}

impl Drop for OvsdbServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An N-member RAFT cluster of one database, every member on loopback with a unix socket and
/// its own client TCP port. Drop kills every member.
pub struct OvsdbCluster {
    dir: TempDir,
    db_name: String,
    tables: Vec<String>,
    members: Vec<Member>,
}

struct Member {
    index: usize,
    raft_port: u16,
    client_port: u16,
    child: Option<Child>,
    generation: u32,
}

impl std::fmt::Debug for OvsdbCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OvsdbCluster")
            .field("dir", &self.dir.path())
            .field("db_name", &self.db_name)
            .field("remotes", &self.remotes())
            .finish()
    }
}

impl OvsdbCluster {
    /// Creates and starts an `n`-member cluster and waits until every member has joined and
    /// a leader is elected.
    pub fn start(schema: SchemaFile, n: usize) -> io::Result<Self> {
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "a cluster needs at least 1 member",
            ));
        }
        let mut last_err = None;
        // Retry because another test may grab a probed port between probe and server start.
        for _ in 0..5 {
            match Self::try_start(&schema, n) {
                Ok(c) => return Ok(c),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("cluster start failed")))
    }

    fn try_start(schema: &SchemaFile, n: usize) -> io::Result<Self> {
        let schema_json = schema.json()?;
        let db_name = schema_name(&schema_json, &schema.path())?;
        let tables = schema_tables(&schema_json);
        let dir = tempfile::Builder::new()
            .prefix("ovsdb-cluster-")
            .tempdir()?;
        let ports = free_ports(2 * n)?;
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            members.push(Member {
                index: i,
                raft_port: ports[2 * i],
                client_port: ports[2 * i + 1],
                child: None,
                generation: 0,
            });
        }
        let raft = |p: u16| format!("tcp:127.0.0.1:{p}");
        let db0 = dir.path().join("s0.db");
        run_tool(&[
            "create-cluster",
            path_str(&db0)?,
            path_str(&schema.path())?,
            &raft(members[0].raft_port),
        ])?;
        for m in &members[1..] {
            let db = dir.path().join(format!("s{}.db", m.index));
            run_tool(&[
                "join-cluster",
                path_str(&db)?,
                &db_name,
                &raft(m.raft_port),
                &raft(members[0].raft_port),
            ])?;
        }
        let mut cluster = OvsdbCluster {
            dir,
            db_name,
            tables,
            members,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..n {
            cluster.wait_member(i, deadline)?;
        }
        cluster.wait_leader(deadline)?;
        Ok(cluster)
    }

    fn sock_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("s{i}.sock"))
    }

    fn ctl_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("s{i}.ctl"))
    }

    fn spawn(&mut self, i: usize) -> io::Result<()> {
        let sock = self.sock_path(i);
        let _ = fs::remove_file(&sock);
        let ctl = self.ctl_path(i);
        let dir = self.dir.path().to_path_buf();
        let m = &mut self.members[i];
        m.generation += 1;
        let log = dir.join(format!("s{i}.{}.log", m.generation));
        let mut cmd = Command::new("ovsdb-server");
        cmd.arg("--no-chdir")
            .arg(format!("--unixctl={}", ctl.display()))
            .arg(format!("--log-file={}", log.display()))
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--remote=ptcp:{}:127.0.0.1", m.client_port))
            .arg(dir.join(format!("s{i}.db")));
        m.child = Some(spawn_logged(
            cmd,
            &dir,
            1000 * (i as u32 + 1) + m.generation,
        )?);
        Ok(())
    }

    /// Waits until member `i` serves the database (joined the cluster, socket up).
    fn wait_member(&mut self, i: usize, deadline: Instant) -> io::Result<()> {
        loop {
            if let Some(status) = self.members[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.members[i].child = None;
                return Err(io::Error::other(format!(
                    "cluster member {i} exited with {status}:\n{}",
                    self.member_log(i)
                )));
            }
            if self.sock_path(i).exists()
                && let Ok(status) = self.cluster_status(i)
                && status.contains("Status: cluster member")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "cluster member {i} did not join in time:\n{}",
                        self.member_log(i)
                    ),
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn member_log(&self, i: usize) -> String {
        let m = &self.members[i];
        fs::read_to_string(self.dir.path().join(format!("s{i}.{}.log", m.generation)))
            .unwrap_or_default()
    }

    fn wait_leader(&self, deadline: Instant) -> io::Result<usize> {
        loop {
            if let Some(l) = self.find_leader() {
                return Ok(l);
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "no RAFT leader elected in time",
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn find_leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| {
            self.members[i].child.is_some()
                && self
                    .cluster_status(i)
                    .is_ok_and(|s| s.contains("Role: leader"))
        })
    }

    /// `ovs-appctl cluster/status DB` of member `i`.
    pub fn cluster_status(&self, i: usize) -> io::Result<String> {
        let out = Command::new("ovs-appctl")
            .arg("-T")
            .arg("5")
            .arg("-t")
            .arg(self.ctl_path(i))
            .arg("cluster/status")
            .arg(&self.db_name)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn db_name(&self) -> &str {
        &self.db_name
    }

    /// Client remotes `tcp:127.0.0.1:PORT`, one per member, in member order.
    pub fn remotes(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("tcp:127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// `unix:` remote of member `i`.
    pub fn unix_remote(&self, i: usize) -> String {
        format!("unix:{}", self.sock_path(i).display())
    }

    /// Pid of member `i`, 0 when killed.
    pub fn pid(&self, i: usize) -> u32 {
        self.members[i].child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Index of the current leader; waits (up to the start timeout) while an election runs.
    /// Panics if none is elected in time.
    pub fn leader(&self) -> usize {
        self.wait_leader(Instant::now() + START_TIMEOUT)
            .unwrap_or_else(|e| panic!("OvsdbCluster::leader: {e}"))
    }

    /// SIGKILL member `i` (its db file stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts member `i` from its db file on the same addresses and waits until it is back
    /// in the cluster.
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_member(i, Instant::now() + START_TIMEOUT)
    }

    /// Runs `ovsdb-client` against member `i` (same argument rules as
    /// [`OvsdbServer::ovsdb_client`]).
    pub fn ovsdb_client(&self, i: usize, args: &[&str]) -> io::Result<String> {
        ovsdb_client_at(&self.unix_remote(i), args)
    }

    /// The database contents as seen by the current leader (see [`OvsdbServer::dump_json`]).
    pub fn dump_json(&self) -> serde_json::Value {
        let l = self.leader();
        dump_json_at(&self.unix_remote(l), &self.db_name, &self.tables)
            .unwrap_or_else(|e| panic!("dump_json of cluster member {l}: {e}"))
    }
}

impl Drop for OvsdbCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

fn path_str(p: &Path) -> io::Result<&str> {
    p.to_str().ok_or_else(|| {
        io::Error::new(
            ErrorKind::InvalidInput,
            format!("path is not UTF-8: {}", p.display()),
        )
    })
}

fn schema_name(schema: &serde_json::Value, path: &Path) -> io::Result<String> {
    schema["name"].as_str().map(str::to_owned).ok_or_else(|| {
        io::Error::new(
            ErrorKind::InvalidData,
            format!("schema {} has no \"name\"", path.display()),
        )
    })
}

fn schema_tables(schema: &serde_json::Value) -> Vec<String> {
    schema["tables"]
        .as_object()
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

fn run_tool(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ovsdb-tool")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ovsdb-tool {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Spawns `cmd` as our child with stdout/stderr going to a file in `dir` (the server's own
/// console messages end up there, useful when it refuses to start).
fn spawn_logged(mut cmd: Command, dir: &Path, tag: u32) -> io::Result<Child> {
    let out = fs::File::create(dir.join(format!("console.{tag}.log")))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    cmd.spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("spawning ovsdb-server: {e}")))
}

fn read_logs(dir: &Path, generation: u32) -> String {
    let log =
        fs::read_to_string(dir.join(format!("ovsdb-server.{generation}.log"))).unwrap_or_default();
    let console =
        fs::read_to_string(dir.join(format!("console.{generation}.log"))).unwrap_or_default();
    format!("{log}{console}")
}

/// The port from a `…|0:ADDR: listening on port N` line of one log file.
fn listening_port_in(log: &Path, addr: &str) -> Option<u16> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let needle = format!("|0:{addr}: listening on port ");
    text.lines()
        .filter_map(|l| l.split(&needle).nth(1))
        .find_map(|rest| rest.trim().parse().ok())
}

/// `n` distinct loopback ports that were free a moment ago. Start from a random spot below
/// the usual ephemeral range (32768+) so parallel tests and outgoing connections rarely pick
/// the same one; callers retry on a clash anyway.
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let mut candidate = 20000 + (h.finish() % 12000) as u16;
    let mut ports = Vec::with_capacity(n);
    let mut tries = 0;
    while ports.len() < n {
        tries += 1;
        if tries > 20000 {
            return Err(io::Error::new(
                ErrorKind::AddrInUse,
                "no free loopback ports found",
            ));
        }
        candidate = if candidate >= 31999 {
            20000
        } else {
            candidate + 1
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], candidate));
        if !ports.contains(&candidate) && TcpListener::bind(addr).is_ok() {
            ports.push(candidate);
        }
    }
    Ok(ports)
}

fn ovsdb_client_at(remote: &str, args: &[&str]) -> io::Result<String> {
    let split = args
        .iter()
        .position(|a| !a.starts_with('-'))
        .ok_or_else(|| {
            io::Error::new(
                ErrorKind::InvalidInput,
                "ovsdb_client: no command in arguments",
            )
        })?;
    let mut cmd = Command::new("ovsdb-client");
    cmd.arg("--timeout=20")
        .args(&args[..=split])
        .arg(remote)
        .args(&args[split + 1..])
        .stdin(Stdio::null());
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ovsdb-client {} {remote} …: {}",
            args[split],
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn dump_json_at(remote: &str, db: &str, tables: &[String]) -> io::Result<serde_json::Value> {
    let mut txn = vec![serde_json::Value::String(db.to_owned())];
    for t in tables {
        txn.push(serde_json::json!({"op": "select", "table": t, "where": []}));
    }
    let out = ovsdb_client_at(
        remote,
        &["transact", &serde_json::Value::Array(txn).to_string()],
    )?;
    let reply: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("transact reply: {e}")))?;
    let results = reply
        .as_array()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, format!("not an array: {reply}")))?;
    let mut db_json = serde_json::Map::new();
    for (t, result) in tables.iter().zip(results) {
        let mut rows = serde_json::Map::new();
        for row in result["rows"].as_array().into_iter().flatten() {
            let mut row = row.as_object().cloned().unwrap_or_default();
            let uuid = row
                .remove("_uuid")
                .and_then(|u| u.get(1).and_then(|s| s.as_str()).map(str::to_owned))
                .ok_or_else(|| {
                    io::Error::new(ErrorKind::InvalidData, format!("row of {t} without _uuid"))
                })?;
            row.remove("_version");
            rows.insert(uuid, serde_json::Value::Object(row));
        }
        db_json.insert(t.clone(), serde_json::Value::Object(rows));
    }
    Ok(serde_json::Value::Object(db_json))
}

/// True if something accepts TCP connections on `127.0.0.1:port`.
pub fn port_is_listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standalone_server_serves_its_database_on_unix_and_tcp_and_survives_kill_and_restart() {
        let mut s = OvsdbServer::start(SchemaFile::Nb).unwrap();
        assert_eq!(s.db_name(), "OVN_Northbound");
        assert_ne!(s.port(), 0);
        assert!(s.pid() > 0);
        let dbs = ovsdb_client_at(&s.tcp_remote(), &["list-dbs"]).unwrap();
        assert!(dbs.contains("OVN_Northbound"), "{dbs}");
        s.ovsdb_client(&[
            "transact",
            r#"["OVN_Northbound",{"op":"insert","table":"Logical_Switch","row":{"name":"ls1"}}]"#,
        ])
        .unwrap();
        let dump = s.dump_json();
        let switches = dump["Logical_Switch"].as_object().unwrap();
        assert_eq!(switches.len(), 1);
        assert_eq!(switches.values().next().unwrap()["name"], "ls1");
        assert_eq!(dump["Load_Balancer"], serde_json::json!({}));

        let old_pid = s.pid();
        let port = s.port();
        s.kill();
        assert_eq!(s.pid(), 0);
        assert!(!port_is_listening(port));
        s.restart().unwrap();
        assert_ne!(s.pid(), old_pid);
        assert_eq!(s.port(), port);
        assert!(port_is_listening(port));
        assert_eq!(s.dump_json(), dump, "the db file survives kill + restart");
    }

    #[test]
    fn dropping_a_server_kills_its_process() {
        let s = OvsdbServer::start(SchemaFile::Vswitch).unwrap();
        assert_eq!(s.db_name(), "Open_vSwitch");
        let pid = s.pid();
        drop(s);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still exists"
        );
    }

    #[test]
    fn a_missing_schema_file_is_an_error_naming_the_file() {
        let err =
            OvsdbServer::start(SchemaFile::Path("/nonexistent/x.ovsschema".into())).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/x.ovsschema"),
            "{err}"
        );
    }

    #[test]
    fn a_three_member_cluster_elects_a_new_leader_after_the_leader_is_killed() {
        let mut c = OvsdbCluster::start(SchemaFile::Nb, 3).unwrap();
        assert_eq!(c.remotes().len(), 3);
        let l = c.leader();
        c.ovsdb_client(
            l,
            &[
                "transact",
                r#"["OVN_Northbound",{"op":"insert","table":"Logical_Switch","row":{"name":"a"}}]"#,
            ],
        )
        .unwrap();
        c.kill(l);
        let l2 = c.leader();
        assert_ne!(l, l2);
        assert_eq!(
            c.dump_json()["Logical_Switch"].as_object().unwrap().len(),
            1
        );
        c.restart(l).unwrap();
        assert!(c.pid(l) > 0);
        for r in c.remotes() {
            let out = ovsdb_client_at(&r, &["list-dbs"]).unwrap();
            assert!(out.contains("_Server"), "{out}");
        }
    }
}
