//! A Prometheus endpoint for a process that is not the daemon: `fieldkit run` keeps its
//! counters in its own registry and this answers `GET /metrics` with their text exposition
//! (and `GET /healthz` with `ok`), on a thread and runtime of its own
//! ([`crate::Running::metrics_endpoint`]), so a scraper never waits on the field loop.
//!
//! Read-only and without a token: like node_exporter it may bind beyond loopback, so that a
//! farm's Prometheus can scrape the robot.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::oneshot;

use crate::ServeError;

/// Renders the current text exposition.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The content type of prometheus-client's text encoding.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics` on `bind` until `stop` fires; `bound` learns the address (port 0 binds a
/// free one).
pub async fn serve_metrics(
    bind: SocketAddr,
    render: Render,
    stop: oneshot::Receiver<()>,
    bound: oneshot::Sender<SocketAddr>,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| ServeError::Config(format!("--metrics-bind {bind}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| ServeError::Internal(e.to_string()))?;
    let _ = bound.send(addr);
    let app = Router::new()
        .route("/metrics", get(move || async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], render()) }))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics and /healthz here").into_response() });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = stop.await;
        })
        .await
        .map_err(|e| ServeError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_rendered_text_and_stops_on_drop() {
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = n.clone();
        let render: Render = Arc::new(move || {
            let k = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("# TYPE x counter\nx_total {k}\n# EOF\n")
        });
        let running = crate::Running::metrics_endpoint("127.0.0.1:0".parse().unwrap(), render).unwrap();
        let url = format!("http://{}", running.addr);
        // (status, body)
        let get = |path: &str| match ureq::get(&format!("{url}{path}")).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, _)) => (code, String::new()),
            Err(e) => panic!("{path}: {e}"),
        };
        assert_eq!(get("/metrics"), (200, "# TYPE x counter\nx_total 0\n# EOF\n".into()));
        assert!(get("/metrics").1.contains("x_total 1"));
        assert_eq!(get("/healthz"), (200, "ok".into()));
        assert_eq!(get("/v2").0, 404);
        let addr = running.addr;
        drop(running);
        assert!(std::net::TcpStream::connect(addr).is_err(), "the endpoint stopped with its handle");
    }

    #[test]
    fn a_taken_address_is_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = crate::Running::metrics_endpoint(addr, Arc::new(String::new)).err().unwrap();
        assert!(err.to_string().contains(&format!("--metrics-bind {addr}")), "{err}");
    }
}
