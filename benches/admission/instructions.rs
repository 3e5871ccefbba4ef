//! The warm path in-process, for instruction counts that a busy machine cannot disturb:
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='*warm_loop*' \
//!     <bench binary> instructions n=2000 [filter=info] 2>/dev/null
//! callgrind_annotate callgrind.out.<pid> | head -40
//! ```
//!
//! Everything from the body bytes to the serialised answer runs through the library's router
//! (axum, limits, parsing, the pipeline, the patch and the response), with the production
//! subscriber (JSON at info, to stderr) installed; TLS and the socket are left out, being the
//! same for the bare server. Instructions per admission = collected Ir / n.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use k8s_standin::StandIn;
use secret_injector::context::{Context, ContextConfig};
use secret_injector::managed::DigestKey;
use secret_injector::metrics::Metrics;
use secret_injector::store::EndpointPolicy;
use tower::ServiceExt;

use crate::warm;

async fn one(router: &axum::Router, body: &Bytes) -> usize {
    let response = router
        .clone()
        .oneshot(
            http::Request::post("/mutate")
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(response.status().is_success());
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

#[inline(never)]
async fn warm_loop(router: &axum::Router, body: &Bytes, n: usize) -> usize {
    let mut bytes = 0;
    for _ in 0..n {
        bytes += one(router, body).await;
    }
    bytes
}

pub async fn run(args: &[String]) {
    let n: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("n=")?.parse().ok())
        .unwrap_or(2000);
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `filter=…` compares log settings: e.g. `secret_injector::admission=debug,info` puts the
    // per-admission debug line back on.
    let filter = args
        .iter()
        .find_map(|a| a.strip_prefix("filter="))
        .unwrap_or("info");
    secret_injector::telemetry::init_tracing(secret_injector::config::LogFormat::Json, filter);
    let standin = StandIn::start().await;
    let rs_uid = warm::seed_warm(&standin);
    let ctx = Arc::new(Context::new(
        standin.client(),
        ContextConfig {
            endpoints: EndpointPolicy::with_vault(&["https://127.0.0.1:9"]),
            ..ContextConfig::default()
        },
        Metrics::new(),
        DigestKey::random(),
    ));
    ctx.managed_index().wait_until_synced().await;
    let router = secret_injector::server::router(ctx.clone());
    let body = Bytes::from(warm::warm_body(&rs_uid));
    let answer = one(&router, &body).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    standin.reset_counts();
    let t = Instant::now();
    let bytes = warm_loop(&router, &body, n).await;
    eprintln!(
        "warm_loop: {n} admissions in {:.3} s ({:.1} µs each), answer {answer} bytes ({bytes} total), API requests during the loop: {}",
        t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64() * 1e6 / n as f64,
        standin.total_requests()
    );
    println!(
        "warm_loop n={n} api_requests={} answer_bytes={answer}",
        standin.total_requests()
    );
}
