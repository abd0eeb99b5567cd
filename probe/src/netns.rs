//! Sockets inside other network namespaces.
//!
//! A backend in an isolated VPC may share its address with a backend of another VPC, and
//! the node's own namespace may not route to it at all: the only unambiguous place to probe
//! a pod from is its own network namespace. `setns(2)` moves the calling *thread*, so it must
//! never run on a tokio worker (every task later scheduled there would follow). One
//! dedicated OS thread serves all requests: for each it opens the namespace file, enters it,
//! creates the socket, and goes back to its home namespace. A socket belongs for life to
//! the namespace it was created in, so the caller then connects and drives it with tokio
//! from any thread.
//!
//! The thread holds no namespace between requests (it reopens the file each time), so a
//! deleted pod's namespace is freed by the kernel as soon as its last probe socket closes.
//! No `unsafe`: nix's `setns` and socket2 are safe wrappers.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;

use crate::error::ProbeError;

/// Where a probe's sockets are created.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// The caller's own namespace (the controller, or a node daemon probing from the node).
    Current,
    /// A bind-mounted namespace file (`/run/netns/x`, `/var/run/netns/cni-…`) or
    /// `/proc/PID/ns/net`.
    Path(PathBuf),
    /// The namespace is not known (e.g. no CNI ADD seen for the pod): every probe fails
    /// with this reason, which ends up in the status' `lastError`.
    Unavailable(String),
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Current => f.write_str("the current network namespace"),
            Self::Path(p) => write!(f, "network namespace {}", p.display()),
            Self::Unavailable(why) => write!(f, "no network namespace ({why})"),
        }
    }
}

struct Request {
    path: PathBuf,
    domain: Domain,
    ty: Type,
    protocol: Option<Protocol>,
    reply: oneshot::Sender<std::io::Result<Socket>>,
}

/// A handle on the netns thread; cheap to clone. The thread ends when the last handle is
/// dropped.
#[derive(Debug, Clone)]
pub struct NetnsWorker {
    tx: mpsc::Sender<Request>,
    alive: Arc<AtomicBool>,
}

impl NetnsWorker {
    /// Starts the thread (it remembers the namespace it starts in as its home).
    pub fn spawn() -> Result<NetnsWorker, ProbeError> {
        let home = File::open("/proc/thread-self/ns/net").map_err(|e| {
            ProbeError::NetnsWorker(format!("opening /proc/thread-self/ns/net: {e}"))
        })?;
        let (tx, rx) = mpsc::channel::<Request>();
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        std::thread::Builder::new()
            .name("ycloud-probe-netns".into())
            .spawn(move || {
                serve(home, rx);
                flag.store(false, Ordering::Release);
            })
            .map_err(|e| ProbeError::NetnsWorker(format!("spawning the thread: {e}")))?;
        Ok(NetnsWorker { tx, alive })
    }

    /// Whether the thread still runs (it ends if it could not return to its home).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// A new socket (close-on-exec, non-blocking) in namespace `path`.
    pub async fn socket(
        &self,
        path: &Path,
        domain: Domain,
        ty: Type,
        protocol: Option<Protocol>,
    ) -> std::io::Result<Socket> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                path: path.to_path_buf(),
                domain,
                ty,
                protocol,
                reply,
            })
            .map_err(|_| std::io::Error::other("the netns thread has ended"))?;
        let s = rx
            .await
            .map_err(|_| std::io::Error::other("the netns thread ended without an answer"))??;
        s.set_nonblocking(true)?;
        Ok(s)
    }
}

fn serve(home: File, rx: mpsc::Receiver<Request>) {
    while let Ok(req) = rx.recv() {
        let r = socket_in(&req.path, req.domain, req.ty, req.protocol);
        let went_home = setns(&home, CloneFlags::CLONE_NEWNET);
        let _ = req.reply.send(r);
        if let Err(e) = went_home {
            // Staying in a pod's namespace would pin it and put the next socket of the
            // *current* namespace in the wrong place: stop; the prober starts a new thread.
            tracing::error!(error = %e, "netns thread cannot return to its home namespace; ending it");
            return;
        }
    }
}

fn socket_in(
    path: &Path,
    domain: Domain,
    ty: Type,
    protocol: Option<Protocol>,
) -> std::io::Result<Socket> {
    let ns = File::open(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("opening network namespace {}: {e}", path.display()),
        )
    })?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
        std::io::Error::other(format!(
            "entering network namespace {}: {e} (is it a netns file?)",
            path.display()
        ))
    })?;
    Socket::new(domain, ty, protocol)
}
