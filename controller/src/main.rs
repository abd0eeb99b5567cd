//! The `ycloud-controller` binary.

use std::sync::Arc;

use clap::Parser;
use ycloud_controller::config::{Args, LogFormat};
use ycloud_controller::error::Error;
use ycloud_controller::reconcile::{Controller, Metrics};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    let opts = args.options()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let metrics = Arc::new(Metrics::default());
        if let Some(addr) = args.metrics_addr {
            let (bound, _task) = ycloud_controller::http::serve(addr, metrics.clone())
                .await
                .map_err(|source| Error::Http { addr, source })?;
            tracing::info!(%bound, "serving /healthz /readyz /metrics");
        }
        tracing::info!(source = %opts.source_dir.display(), status = %opts.status_dir.display(), nb = ?opts.nb_remotes, "starting");
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let controller = tokio::select! {
            c = Controller::connect(opts, metrics) => c.map_err(|e| {
                tracing::error!(category = e.category(), error = %e, "start-up failed");
                e
            })?,
            () = &mut shutdown => return Ok(()),
        };
        controller.run(shutdown).await?;
        Ok(())
    })
}
