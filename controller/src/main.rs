//! The `ycloud-controller` binary.

use std::sync::Arc;

use clap::Parser;
use ycloud_controller::config::{Args, LogFormat};
use ycloud_controller::error::Error;
use ycloud_controller::reconcile::{Controller, Metrics};

/// mimalloc instead of glibc's malloc: glibc keeps the pages a cold start's pass freed (per
/// thread arena, RSS followed the peak: 308 MiB at 10,000 services with 150 MiB live),
/// mimalloc returns them (docs/performance.md, memory).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn init_logging(format: LogFormat) {
    // RUST_LOG (full directives) wins; the chart sets YCLOUD_LOG_LEVEL (one level).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("YCLOUD_LOG_LEVEL"))
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
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        #[cfg(feature = "kube")]
        if let Some(kube_opts) = args.kube_options()? {
            return cluster::run(opts, kube_opts, metrics, shutdown).await;
        }
        tracing::info!(source = %opts.source_dir.display(), status = %opts.status_dir.display(), nb = ?opts.nb_remotes, "starting");
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

/// Cluster mode: reflectors in, the API server as the status sink, and the Lease deciding
/// who writes.
#[cfg(feature = "kube")]
mod cluster {
    use std::sync::Arc;

    use ycloud_controller::kube::KubeOptions;
    use ycloud_controller::kube::lease::Elector;
    use ycloud_controller::kube::sink::ApiSink;
    use ycloud_controller::kube::source::KubeSource;
    use ycloud_controller::reconcile::{
        Controller, Metrics, Options, Source, StatusSink, WriteGate,
    };

    pub async fn run(
        opts: Options,
        k: KubeOptions,
        metrics: Arc<Metrics>,
        mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> anyhow::Result<()> {
        let client = kube::Client::try_default().await?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (gate, elector) = match k.lease.clone() {
            Some(mut lease) => {
                if lease.namespace.is_empty() {
                    lease.namespace = client.default_namespace().to_owned();
                }
                tracing::info!(namespace = %lease.namespace, name = %lease.name, identity = %lease.identity, "leader election");
                let elector = Elector::new(client.clone(), lease);
                let leadership = elector.leadership();
                let task = tokio::spawn(elector.run(async move {
                    let _ = stop_rx.await;
                }));
                (WriteGate::new(move || leadership.is_leading()), Some(task))
            }
            None => (WriteGate::always(), None),
        };
        let source = Source::Kube(Box::new(KubeSource::start(client.clone(), k.crd_check)));
        let sink = StatusSink::Api(Box::new(ApiSink::new(
            client,
            Some(k.identity.clone()),
            gate.clone(),
        )));
        tracing::info!(nb = ?opts.nb_remotes, identity = %k.identity, "starting (cluster mode)");
        let connected = tokio::select! {
            c = Controller::connect_with(opts, metrics, source, sink, gate) => Some(c?),
            () = &mut shutdown => None,
        };
        if let Some(controller) = connected {
            controller.run(shutdown).await?;
        }
        // Graceful: the lease is released so the standby takes over at once.
        let _ = stop_tx.send(());
        if let Some(task) = elector {
            let _ = task.await;
        }
        Ok(())
    }
}
