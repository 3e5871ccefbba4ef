//! Graceful shutdown. On SIGTERM (or Ctrl-C): readiness turns false at once, the server keeps
//! serving for the drain period so the endpoint leaves the Service before the listener
//! closes, then every task is told to stop; the HTTPS server stops accepting and waits a
//! bounded time for in-flight reviews (see `serve_tls`).
//!
//! Timing against the Deployment: `preStop` sleep (5s) + `--shutdown-drain` (5s) +
//! `--shutdown-timeout` (10s) = 20s < `terminationGracePeriodSeconds` (30s).

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once shutdown starts; `/readyz` stays false from then on, even if a start-up task
/// (waiting for the API server) would mark the process ready afterwards.
pub static DRAINING: AtomicBool = AtomicBool::new(false);
use std::time::Duration;

use tokio::sync::watch;
use tracing::info;

/// Resolves on the first SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Wait for the shutdown signal, then fail readiness, keep serving for `drain` (cut short
/// by a second signal), then flip `stop` so every task winds down.
pub async fn on_signal_drain_then_stop(
    ready: &AtomicBool,
    drain: Duration,
    stop: &watch::Sender<bool>,
) {
    signal().await;
    DRAINING.store(true, Ordering::SeqCst);
    ready.store(false, Ordering::SeqCst);
    info!(
        drain_secs = drain.as_secs_f64(),
        "shutdown requested: readiness false, still serving for the drain period"
    );
    tokio::select! {
        _ = tokio::time::sleep(drain) => {}
        _ = signal() => info!("second signal: skipping the rest of the drain"),
    }
    info!("drain over: no longer accepting connections; finishing in-flight reviews");
    let _ = stop.send(true);
}
