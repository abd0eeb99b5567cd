//! Network namespace work on dedicated OS threads.
//!
//! `setns(2)` changes the namespace of the calling *thread*: done on a tokio worker it would
//! silently move every task later scheduled there. So each piece of netns work gets its own
//! short-lived thread, enters the namespace, opens its own rtnetlink socket there (a
//! netlink socket belongs to the namespace it was created in) and runs a single-threaded
//! runtime for the netlink futures. Threads are cheap next to the netlink round trips.

use std::fs::File;
use std::future::Future;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};
use rtnetlink::Handle;

use crate::error::{CniError, code};

/// Runs `f` with a netlink handle in the network namespace at `netns` (a bind-mounted
/// nsfs file such as `/run/netns/x` or `/proc/PID/ns/net`), or in the daemon's own
/// namespace when `None`. Awaits the thread without blocking the caller's runtime.
pub async fn with_netlink<F, Fut, T>(netns: Option<PathBuf>, f: F) -> Result<T, CniError>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, CniError>>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let what = netns
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the node namespace".into());
    std::thread::Builder::new()
        .name("ycloud-netns".into())
        .spawn(move || {
            let _ = tx.send(run_in(netns, f));
        })
        .map_err(|e| CniError::new(code::IO, format!("spawning a netns thread: {e}")))?;
    rx.await.map_err(|_| {
        CniError::new(
            code::IO,
            format!("the netns thread for {what} ended without an answer (panicked)"),
        )
    })?
}

/// Like [`with_netlink`] for callers that are not async (tests, benches, the plugin side).
pub fn with_netlink_blocking<F, Fut, T>(netns: Option<PathBuf>, f: F) -> Result<T, CniError>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, CniError>>,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name("ycloud-netns".into())
        .spawn(move || run_in(netns, f))
        .map_err(|e| CniError::new(code::IO, format!("spawning a netns thread: {e}")))?
        .join()
        .map_err(|_| CniError::new(code::IO, "the netns thread panicked"))?
}

fn run_in<F, Fut, T>(netns: Option<PathBuf>, f: F) -> Result<T, CniError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, CniError>>,
{
    if let Some(path) = &netns {
        let file = File::open(path).map_err(|e| {
            let c = if e.kind() == std::io::ErrorKind::NotFound {
                code::NETNS
            } else {
                code::IO
            };
            CniError::new(
                c,
                format!("opening network namespace {}: {e}", path.display()),
            )
        })?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
            CniError::new(
                code::NETNS,
                format!(
                    "entering network namespace {}: {e} (is it a netns file?)",
                    path.display()
                ),
            )
        })?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(code::IO, format!("netns thread runtime: {e}")))?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| CniError::new(code::NETLINK, format!("opening a netlink socket: {e}")))?;
        let conn_task = tokio::spawn(conn);
        let out = f(handle).await;
        conn_task.abort();
        out
    })
}

/// Turns TX checksum offload off on `dev` in the calling thread's namespace, like
/// `ethtool -K dev tx off` (`ETHTOOL_STXCSUM`; the kernel then also drops the offloads
/// that depend on it, e.g. TSO). The userspace datapath reads veths through AF_PACKET and
/// cannot finish partial checksums: without this, ping works and TCP does not.
#[allow(unsafe_code)]
pub fn tx_checksum_off(dev: &str) -> Result<(), CniError> {
    use std::os::fd::AsRawFd;

    use nix::libc;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

    const ETHTOOL_STXCSUM: u32 = 0x17;
    /// `struct ethtool_value`.
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    /// `struct ifreq` (40 bytes on 64-bit): the name, then the union, of which we use the
    /// `ifr_data` pointer; the rest of the union is padding the kernel copies in.
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _union_rest: [u8; 24 - std::mem::size_of::<usize>()],
    }

    let fail = |e: nix::errno::Errno| {
        CniError::new(
            code::NETLINK,
            format!("turning TX checksum offload off on {dev} (SIOCETHTOOL): {e}"),
        )
    };
    if dev.is_empty() || dev.len() >= libc::IFNAMSIZ {
        return Err(CniError::new(
            code::NETLINK,
            format!("{dev:?} is not a valid interface name"),
        ));
    }
    // Any socket of the namespace serves for device ioctls; it is created in this thread's
    // (i.e. the target) namespace.
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(fail)?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    let mut ifr = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _union_rest: [0; 24 - std::mem::size_of::<usize>()],
    };
    ifr.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: `ifr` is a properly sized, initialized `struct ifreq` (NUL-terminated name,
    // checked shorter than IFNAMSIZ) whose `ifr_data` points to `value`, a valid
    // `struct ethtool_value` on this stack frame that outlives the call; the kernel reads
    // both and writes nothing back for ETHTOOL_STXCSUM. `sock` is an open socket owned here.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr as *mut IfReq) };
    if rc < 0 {
        return Err(fail(nix::errno::Errno::last()));
    }
    Ok(())
}
