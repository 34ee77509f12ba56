//! fieldkit-serve: the inference daemon. One process owns the models; the robot controller,
//! camera loop and dashboard ask it over HTTP — fieldkit's JSON API or the Open Inference
//! Protocol (KServe v2) — while K worker threads run tract, each with its own state.
//!
//! `serve` loads the configured models, binds, answers until its shutdown future resolves
//! (SIGTERM / Ctrl-C from the CLI), then drains: no new connections, requests in flight
//! finish, workers exit. SIGHUP reloads the configured models (hot swap).

pub mod api;
pub mod app;
pub mod config;
pub mod error;
pub mod exporter;
pub mod loadtest;
pub mod metrics;
pub mod pool;
pub mod registry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

pub use config::ServeConfig;
pub use error::ServeError;

use app::{router, AppState, Shared};

/// Structured logs on stderr; `FIELDKIT_LOG` takes target=level directives, e.g. `warn` or
/// `info,fieldkit_serve::app=warn` (default `info`). `Targets` rather than `EnvFilter`: the same
/// syntax without span-field matching, and without a regex engine in the edge binary.
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    let default = || tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO);
    let filter = match std::env::var("FIELDKIT_LOG") {
        Ok(spec) => spec.parse().unwrap_or_else(|e| {
            eprintln!("FIELDKIT_LOG={spec:?}: {e}; logging at info");
            default()
        }),
        Err(_) => default(),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry().with(fmt).with(filter).try_init();
}

async fn load_configured(state: &Shared) -> Result<(), ServeError> {
    for (name, path) in state.cfg.models.clone() {
        let st = state.clone();
        let m = tokio::task::spawn_blocking(move || st.models.load(&name, &path))
            .await
            .map_err(|e| ServeError::Internal(e.to_string()))??;
        tracing::info!(model = %m.name, version = m.version, path = %m.path.display(), load_ms = m.engine.load_ms(), from = ?m.engine.load_source(), "loaded");
    }
    Ok(())
}

/// Serves until `shutdown` resolves, then drains. `bound` learns the address (port 0 binds
/// a free one).
pub async fn serve(
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    bound: Option<oneshot::Sender<SocketAddr>>,
) -> Result<(), ServeError> {
    cfg.validate()?;
    let state: Shared = Arc::new(AppState::new(cfg));
    load_configured(&state).await?;
    let listener = tokio::net::TcpListener::bind(state.cfg.bind)
        .await
        .map_err(|e| ServeError::Config(format!("binding {}: {e}", state.cfg.bind)))?;
    let addr = listener.local_addr().map_err(|e| ServeError::Internal(e.to_string()))?;
    tracing::info!(%addr, workers = state.cfg.workers, models = state.models.len(), auth = state.cfg.token.is_some(), "serving");
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }
    #[cfg(unix)]
    {
        let st = state.clone();
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configured models");
                    if let Err(e) = load_configured(&st).await {
                        tracing::error!(error = %e, "reload failed; the previous versions keep serving");
                    }
                }
            });
        }
    }
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ServeError::Internal(e.to_string()))?;
    tracing::info!("draining the inference workers");
    let st = state.clone();
    tokio::task::spawn_blocking(move || st.pool.shutdown()).await.map_err(|e| ServeError::Internal(e.to_string()))?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}

/// A server on its own thread and runtime (the daemon for tests and the demo, the metrics
/// endpoint of `fieldkit run`); stopped and drained on drop.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Running {
    /// The daemon.
    pub fn start(cfg: ServeConfig) -> Result<Self, ServeError> {
        Self::spawn("serve", 2, move |stopped, bound| {
            serve(
                cfg,
                async {
                    let _ = stopped.await;
                },
                Some(bound),
            )
        })
    }

    /// A Prometheus endpoint alone: `GET /metrics` answers `render()` (see [`exporter`]).
    pub fn metrics_endpoint(bind: SocketAddr, render: exporter::Render) -> Result<Self, ServeError> {
        Self::spawn("metrics", 1, move |stopped, bound| exporter::serve_metrics(bind, render, stopped, bound))
    }

    /// Runs `server` on a thread of its own with a `threads`-worker runtime, and waits until it
    /// has bound (or failed).
    fn spawn<F, Fut>(name: &str, threads: usize, server: F) -> Result<Self, ServeError>
    where
        F: FnOnce(oneshot::Receiver<()>, oneshot::Sender<SocketAddr>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), ServeError>>,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound_tx, bound_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build()
                    .map_err(|e| ServeError::Internal(e.to_string()))?;
                rt.block_on(server(stopped, bound_tx))
            })
            .map_err(|e| ServeError::Internal(e.to_string()))?;
        match bound_rx.blocking_recv() {
            Ok(addr) => Ok(Running { addr, stop: Some(stop), thread: Some(thread) }),
            Err(_) => Err(thread
                .join()
                .unwrap_or_else(|_| Err(ServeError::Internal("the server thread panicked".into())))
                .err()
                .unwrap_or_else(|| ServeError::Internal("the server stopped before binding".into()))),
        }
    }

    /// Stops accepting, lets requests in flight finish, stops the workers.
    pub fn stop(mut self) -> Result<(), ServeError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), ServeError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(ServeError::Internal("the server thread panicked".into()))),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
