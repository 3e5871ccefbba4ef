//! HTTP plumbing: the HTTPS admission router (`/mutate` for pods, `/validate` for stores), the plain admin router, the TLS accept loop
//! and graceful shutdown. Handlers only adapt HTTP; decisions live in `admission`.

pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::admission;
use crate::context::Context;
use crate::metrics::Metrics;

/// AdmissionReviews of large pods stay well under this; anything bigger is refused unread.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// The HTTPS routes. Exposed so tests can drive it in-process without TLS.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ctx)
}

async fn mutate(State(ctx): State<Arc<Context>>, body: Bytes) -> Response {
    match admission::review_pod(&ctx, &body).await {
        Ok(review) => json_review(&review),
        Err(e) => (StatusCode::BAD_REQUEST, e.0).into_response(),
    }
}

/// Serialise a review the way the API server's own clients do: kube-core would write
/// `response.patch` as an array of numbers; Kubernetes' wire format for `[]byte` is base64,
/// about four times smaller.
fn json_review(
    review: &kube::core::admission::AdmissionReview<kube::core::DynamicObject>,
) -> Response {
    use base64::Engine;
    let mut value = match serde_json::to_value(review) {
        Ok(v) => v,
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "response could not be serialised",
            )
                .into_response()
        }
    };
    if let Some(bytes) = review.response.as_ref().and_then(|r| r.patch.as_ref()) {
        value["response"]["patch"] =
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    Json(value).into_response()
}

async fn validate(State(ctx): State<Arc<Context>>, body: Bytes) -> Response {
    match admission::validate::review_store(&ctx.config().endpoints, ctx.metrics(), &body).await {
        Ok(review) => json_review(&review),
        Err(e) => (StatusCode::BAD_REQUEST, e.0).into_response(),
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
}

/// `/healthz` (process alive), `/readyz` (Kubernetes API reachable and managed Secrets indexed),
/// `/metrics` (Prometheus text).
pub fn admin_router(metrics: Metrics, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move {
                if s.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    s.metrics.encode(),
                )
            }),
        )
        .with_state(AdminState { metrics, ready })
}

/// Serve `app` over TLS until `shutdown` flips, then let open connections finish (bounded).
pub async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(app.clone());
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => { debug!(%peer, error = %e, "TLS handshake failed"); return; }
                        Err(_) => { debug!(%peer, "TLS handshake timed out"); return; }
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn).await {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after 10s; closing them");
    }
    Ok(())
}

/// Serve plain HTTP (the admin port) until shutdown.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}
