//! `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1: three fixed answers need no
//! HTTP framework.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::reconcile::Metrics;

/// The answer to one request line: (status, body).
pub fn respond(path: &str, m: &Metrics) -> (&'static str, String) {
    match path {
        "/healthz" => ("200 OK", "ok\n".to_owned()),
        "/readyz" => {
            let ready = m.nb_connected.load(Ordering::Relaxed) && m.synced.load(Ordering::Relaxed);
            if ready {
                ("200 OK", "ready\n".to_owned())
            } else {
                (
                    "503 Service Unavailable",
                    "not ready: NB not connected, or caches not synced (leader: first pass not done)\n"
                        .to_owned(),
                )
            }
        }
        "/metrics" => ("200 OK", m.render()),
        _ => ("404 Not Found", "not found\n".to_owned()),
    }
}

/// Binds `addr` and serves until the task is dropped. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // Read the request head (up to 8 KiB): answering and closing with unread
                // bytes would make the kernel reset the connection under the reply.
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&buf);
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = respond(path, &metrics);
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_is_ready_only_when_connected_and_synced() {
        let m = Metrics::default();
        assert_eq!(respond("/readyz", &m).0, "503 Service Unavailable");
        m.nb_connected.store(true, Ordering::Relaxed);
        assert_eq!(respond("/readyz", &m).0, "503 Service Unavailable");
        m.synced.store(true, Ordering::Relaxed);
        assert_eq!(respond("/readyz", &m).0, "200 OK");
        assert_eq!(respond("/healthz", &m).0, "200 OK");
        assert!(
            respond("/metrics", &m)
                .1
                .contains("ycloud_reconciles_total 0")
        );
        assert_eq!(respond("/nope", &m).0, "404 Not Found");
    }
}
