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

/// A plain function around the loop, so callgrind can toggle collection on it (an async fn's
/// body is polled from elsewhere).
#[inline(never)]
fn warm_loop(
    runtime: &tokio::runtime::Runtime,
    router: &axum::Router,
    body: &Bytes,
    n: usize,
) -> usize {
    runtime.block_on(async {
        let mut bytes = 0;
        for _ in 0..n {
            bytes += one(router, body).await;
        }
        bytes
    })
}

pub fn run(runtime: &tokio::runtime::Runtime, args: &[String]) {
    let n: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("n=")?.parse().ok())
        .unwrap_or(2000);
    let _guard = runtime.enter();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `filter=…` compares log settings: e.g. `secret_injector::admission=debug,info` puts the
    // per-admission debug line back on.
    let filter = args
        .iter()
        .find_map(|a| a.strip_prefix("filter="))
        .unwrap_or("info");
    secret_injector::telemetry::init_tracing(secret_injector::config::LogFormat::Json, filter);
    if args.iter().any(|a| a == "probes") {
        let standin = runtime.block_on(StandIn::start());
        probes(&warm::warm_body(&warm::seed_warm(&standin)), n);
        return;
    }
    let standin = runtime.block_on(StandIn::start());
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
    runtime.block_on(ctx.managed_index().wait_until_synced());
    let router = secret_injector::server::router(ctx.clone());
    let body = Bytes::from(warm::warm_body(&rs_uid));
    let answer = runtime.block_on(async {
        let answer = one(&router, &body).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer
    });
    standin.reset_counts();
    let t = Instant::now();
    let bytes = warm_loop(runtime, &router, &body, n);
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

/// The work the hygiene changes removed, measured alone on the warm review (run with
/// `--toggle-collect='*probe_*'`; callgrind_annotate gives each probe's inclusive count):
/// cloning the pod out of the request, and writing the answer through a `Value` tree.
pub fn probes(body: &[u8], n: usize) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
    let review: AdmissionReview<Pod> = serde_json::from_slice(body).unwrap();
    let request: AdmissionRequest<Pod> = review.try_into().unwrap();
    let pod = request.object.clone().unwrap();
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "DB_USERNAME", "valueFrom": {"secretKeyRef": {"name": "payments-api-injected", "key": "DB_USERNAME"}}}},
        {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "payments-api-injected", "key": "DB_PASSWORD"}}}},
        {"op": "add", "path": "/metadata/annotations/secret-injector.io~1injected", "value": "payments-api-injected"}
    ]))
    .unwrap();
    let answer = AdmissionResponse::from(&request)
        .with_patch(patch)
        .unwrap()
        .into_review();
    eprintln!("probe_pod_clone: {}", probe_pod_clone(&pod, n));
    eprintln!("probe_value_tree: {}", probe_value_tree(&answer, n));
}

#[inline(never)]
fn probe_pod_clone(pod: &k8s_openapi::api::core::v1::Pod, n: usize) -> usize {
    (0..n)
        .map(|_| {
            std::hint::black_box(pod.clone())
                .metadata
                .labels
                .map_or(0, |l| l.len())
        })
        .sum()
}

/// The old answer writer: the review to a `Value`, the byte array swapped for base64, then
/// the `Value` to bytes.
#[inline(never)]
fn probe_value_tree(
    review: &kube::core::admission::AdmissionReview<kube::core::DynamicObject>,
    n: usize,
) -> usize {
    use base64::Engine;
    (0..n)
        .map(|_| {
            let mut value = serde_json::to_value(review).unwrap();
            if let Some(bytes) = review.response.as_ref().and_then(|r| r.patch.as_ref()) {
                value["response"]["patch"] = serde_json::Value::String(
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                );
            }
            serde_json::to_vec(&value).unwrap().len()
        })
        .sum()
}
