//! HTTP plumbing: the HTTPS admission router (`/mutate` for pods, `/validate` for stores), the plain admin router, the TLS accept loop
//! and graceful shutdown. Handlers only adapt HTTP; decisions live in `admission`.

pub mod limits;
mod review_json;
pub mod shutdown;
pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::admission;
use crate::context::Context;
use crate::metrics::Metrics;
use limits::{Idle, LimitArgs, ReviewGate};

/// The HTTPS routes with the default limits. Exposed so tests can drive it in-process
/// without TLS.
pub fn router(ctx: Arc<Context>) -> Router {
    router_with_limits(ctx, &LimitArgs::default())
}

/// The HTTPS routes behind the review gate (concurrency cap, body size and time limits).
pub fn router_with_limits(ctx: Arc<Context>, limits: &LimitArgs) -> Router {
    let gate = ReviewGate::new(limits);
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .layer(middleware::from_fn_with_state(gate, limits::review_gate))
        .layer(DefaultBodyLimit::max(limits.max_request_body))
        .with_state(ctx)
}

async fn mutate(State(ctx): State<Arc<Context>>, body: Bytes) -> Response {
    match admission::review_pod(&ctx, &body).await {
        Ok(review) => json_review(&review),
        Err(e) => (StatusCode::BAD_REQUEST, e.0).into_response(),
    }
}

/// Serialise a review the way the API server's own clients do (see `review_json`).
fn json_review(
    review: &kube::core::admission::AdmissionReview<kube::core::DynamicObject>,
) -> Response {
    match review_json::review_json(review) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "response could not be serialised",
        )
            .into_response(),
    }
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
                if s.ready.load(Ordering::Relaxed) && !shutdown::DRAINING.load(Ordering::SeqCst) {
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

/// Serve `app` over TLS until `shutdown` flips, then stop accepting and let open connections
/// finish their in-flight requests for at most `limits.shutdown_timeout`.
///
/// At most `limits.max_connections` connections are open: a connection beyond that is closed
/// as soon as it is accepted. Each one must finish its TLS handshake within
/// `tls_handshake_timeout`, start a request within `header_read_timeout`, and is closed after
/// `idle_timeout` without a request.
pub async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    limits: LimitArgs,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let builder = Arc::new(limits::http_builder(&limits));
    let limits = Arc::new(limits);
    let max_conns = limits.max_connections.max(1);
    let connections = Arc::new(Semaphore::new(max_conns as usize));
    let mut refused: u64 = 0;
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
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    // Closed at once (dropping the socket), never queued.
                    refused += 1;
                    if refused.is_power_of_two() {
                        warn!(%peer, max_connections = max_conns, refused, "connection limit reached; closing new connections");
                    }
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let app = app.clone();
                let builder = builder.clone();
                let limits = limits.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    serve_connection(tcp, peer, acceptor, app, builder, limits, shutdown).await;
                    drop(permit);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    // Connections the kernel already completed (the accept backlog) would be reset when the
    // listener closes: serve them too.
    while let Some(Ok((tcp, peer))) = futures::FutureExt::now_or_never(listener.accept()) {
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            break;
        };
        let (acceptor, app, builder, limits) = (
            acceptor.clone(),
            app.clone(),
            builder.clone(),
            limits.clone(),
        );
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_connection(tcp, peer, acceptor, app, builder, limits, shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a permit until it ends: all permits back = all connections done.
    if tokio::time::timeout(limits.shutdown_timeout, connections.acquire_many(max_conns))
        .await
        .is_err()
    {
        warn!(
            timeout_secs = limits.shutdown_timeout.as_secs_f64(),
            "connections still open after the shutdown timeout; closing them"
        );
    }
    Ok(())
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    builder: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    limits: Arc<LimitArgs>,
    mut shutdown: watch::Receiver<bool>,
) {
    let stream =
        match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
    let activity = Arc::new(limits::Activity::default());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let guard = activity.start();
            let mut app = app.clone();
            async move {
                let response = tower::Service::call(&mut app, request).await;
                drop(guard);
                response
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let tick = (limits.header_read_timeout / 4)
        .clamp(Duration::from_millis(50), Duration::from_millis(250));
    let mut watchdog = tokio::time::interval(tick);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Shutdown closes a connection only once it has served a request (or timed out): a client
    // that connected just before the listener closed still gets its answer.
    let mut stopping = *shutdown.borrow();
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !stopping => stopping = true,
            _ = watchdog.tick(), if !closing => match activity.check(&limits) {
                Idle::NeverSpoke => {
                    debug!(%peer, "no request within the header-read timeout; closing");
                    return;
                }
                Idle::Idle => {
                    debug!(%peer, "idle connection; closing");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Idle::Keep if stopping && activity.served_any() => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Idle::Keep => {}
            },
        }
    }
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
