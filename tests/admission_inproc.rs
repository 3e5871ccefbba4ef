//! In-process HTTP layer: the library's Router driven with `tower::ServiceExt::oneshot` and the
//! AdmissionReview fixtures under tests/fixtures/, against the Kubernetes API stand-in.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use secret_injector::admission::{Injector, InjectorConfig};
use secret_injector::managed::DigestKey;
use secret_injector::metrics::Metrics;
use serde_json::{json, Value};
use support::standin::StandIn;
use tower::ServiceExt;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn injector(standin: &StandIn, config: InjectorConfig) -> Arc<Injector> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(Injector::new(
        standin.client(),
        config,
        Metrics::new(),
        DigestKey::random(),
    ))
}

async fn post(router: &axum::Router, body: Vec<u8>) -> (u16, Value) {
    let response = router
        .clone()
        .oneshot(
            Request::post("/mutate")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The payments namespace with a SecretStore whose server is `vault_addr`, and the pod's owners.
fn seed(standin: &StandIn, vault_addr: &str) {
    standin
        .seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments"}}));
    standin.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "payments-api", "namespace": "payments"}}));
    standin.seed(
        json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "vault-backend", "namespace": "payments"},
        "spec": {"provider": {"vault": {"server": vault_addr, "path": "secret",
            "auth": {"kubernetes": {"role": "payments", "audiences": ["vault"]}}}}}}),
    );
    let d = standin.seed(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "payments-api", "namespace": "payments"}, "spec": {"selector": {}, "template": {}}}));
    standin.seed(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "payments-api-7c9f8d6b5", "namespace": "payments", "uid": "5b1f0c6e-0000-4000-8000-000000000001",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "payments-api", "uid": d["metadata"]["uid"], "controller": true}]},
        "spec": {"selector": {}}}));
}

#[tokio::test]
async fn fixtures_that_need_no_injection_are_allowed_without_api_calls() {
    let standin = StandIn::start().await;
    let router = secret_injector::server::router(injector(&standin, InjectorConfig::default()));
    for name in [
        "pod-create-no-annotations.json",
        "pod-create-opted-out.json",
        "pod-update-short-form.json",
        "configmap-create.json",
    ] {
        let review = fixture(name);
        let (status, body) = post(&router, serde_json::to_vec(&review).unwrap()).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(
            body["response"]["uid"], review["request"]["uid"],
            "{name}: uid echoed"
        );
        assert_eq!(body["response"]["allowed"], true, "{name}");
        assert!(body["response"].get("patch").is_none(), "{name}");
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
    }
    assert_eq!(standin.total_requests(), 0, "{:?}", standin.counts());
}

#[tokio::test]
async fn unknown_annotation_fixture_is_denied_before_any_backend_work() {
    let standin = StandIn::start().await;
    seed(&standin, "https://vault.invalid:8200");
    let router = secret_injector::server::router(injector(&standin, InjectorConfig::default()));
    let review = fixture("pod-create-unknown-annotation.json");
    let (_, body) = post(&router, serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(body["response"]["uid"], review["request"]["uid"]);
    assert_eq!(body["response"]["allowed"], false);
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("secret-injector.io/envv.X"), "{message}");
    assert_eq!(standin.writes("secrets"), 0);
    assert!(standin.token_requests().is_empty());
}

#[tokio::test]
async fn dry_run_fixture_returns_the_patch_without_side_effects() {
    let standin = StandIn::start().await;
    // An address nothing listens on: any attempt to reach the backend would fail the test.
    seed(&standin, "https://127.0.0.1:9");
    let router = secret_injector::server::router(injector(&standin, InjectorConfig::default()));
    let review = fixture("pod-create-short-form-dry-run.json");
    let (_, body) = post(&router, serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert_eq!(body["response"]["patchType"], "JSONPatch");
    assert!(standin.token_requests().is_empty());
    assert_eq!(standin.writes("secrets"), 0);
}

#[tokio::test]
async fn malformed_bodies_get_400_or_an_invalid_review() {
    let standin = StandIn::start().await;
    let router = secret_injector::server::router(injector(&standin, InjectorConfig::default()));
    let (status, _) = post(&router, b"\x00\xff garbage".to_vec()).await;
    assert_eq!(status, 400);
    let (status, body) = post(
        &router,
        serde_json::to_vec(&fixture("review-without-request.json")).unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["reason"], "InvalidRequest");
    // Truncations of a real review never panic the handler.
    let full = serde_json::to_vec(&fixture("pod-create-short-form.json")).unwrap();
    for cut in (0..full.len()).step_by(97) {
        let (status, _) = post(&router, full[..cut].to_vec()).await;
        assert!(status == 400 || status == 200, "cut {cut}: {status}");
    }
}

#[tokio::test]
async fn a_hanging_backend_is_cut_off_by_the_internal_deadline() {
    let standin = StandIn::start().await;
    // Accepts connections and never answers: the worst backend there is.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    seed(&standin, &format!("http://{addr}"));
    let config = InjectorConfig {
        deadline: Duration::from_millis(1500),
        ..InjectorConfig::default()
    };
    let router = secret_injector::server::router(injector(&standin, config));
    let review = fixture("pod-create-short-form.json");
    let started = Instant::now();
    let (_, body) = post(&router, serde_json::to_vec(&review).unwrap()).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}, past the 4s per-request timeout"
    );
    assert_eq!(body["response"]["uid"], review["request"]["uid"]);
    assert_eq!(body["response"]["allowed"], false);
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("internal deadline of 1.5s")
            && message.contains("fetching from the secret backend"),
        "{message}"
    );
    assert_eq!(standin.writes("secrets"), 0);
}
