//! In-process HTTP layer: the library's Router driven with `tower::ServiceExt::oneshot` and the
//! AdmissionReview fixtures under tests/fixtures/, against the Kubernetes API stand-in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use k8s_standin::StandIn;
use secret_injector::context::{Context, ContextConfig};
use secret_injector::managed::DigestKey;
use secret_injector::metrics::Metrics;
use secret_injector::store::EndpointPolicy;
use serde_json::{json, Value};
use tower::ServiceExt;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn injector(standin: &StandIn, mut config: ContextConfig) -> Arc<Context> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    config.endpoints = EndpointPolicy::with_vault(&["http://127.0.0.1:*", "https://127.0.0.1:*"]);
    Arc::new(Context::new(
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
    standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments", "labels": {"secret-injector.io/inject": "enabled"}}}));
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
    let router = secret_injector::server::router(injector(&standin, ContextConfig::default()));
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
    assert_eq!(
        requests_beyond_watches(&standin),
        0,
        "{:?}",
        standin.counts()
    );
}

/// Requests other than the index's lists and watches.
fn requests_beyond_watches(standin: &StandIn) -> u64 {
    standin
        .counts()
        .iter()
        .filter(|((verb, _), _)| verb != "list" && verb != "watch")
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn unknown_annotation_fixture_is_denied_before_any_backend_work() {
    let standin = StandIn::start().await;
    seed(&standin, "https://vault.invalid:8200");
    let router = secret_injector::server::router(injector(&standin, ContextConfig::default()));
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
    let router = secret_injector::server::router(injector(&standin, ContextConfig::default()));
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
    let router = secret_injector::server::router(injector(&standin, ContextConfig::default()));
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
    let config = ContextConfig {
        deadline: Duration::from_millis(1500),
        ..ContextConfig::default()
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

/// Dry-run a pod owned by `owner` (kind, name, uid) and return the response.
async fn dry_run_owned_by(router: &axum::Router, owner: Value, annotations: Value) -> Value {
    let mut review = fixture("pod-create-short-form-dry-run.json");
    review["request"]["object"]["metadata"]["ownerReferences"] = json!([owner]);
    review["request"]["object"]["metadata"]["annotations"] = annotations;
    let (_, body) = post(router, serde_json::to_vec(&review).unwrap()).await;
    body["response"].clone()
}

fn patch_text(response: &Value) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn owner_chains_name_the_secret_and_contribute_annotations() {
    let standin = StandIn::start().await;
    seed(&standin, "https://127.0.0.1:9");
    // Job → CronJob: the CronJob's own metadata carries the Secret name.
    standin.seed(json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly-report", "namespace": "payments",
        "annotations": {"secret-injector.io/secret-name": "report-creds"}}, "spec": {"schedule": "@daily", "jobTemplate": {}}}));
    let cron_uid = standin
        .object("cronjobs", Some("payments"), "nightly-report")
        .unwrap()["metadata"]["uid"]
        .clone();
    standin.seed(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "nightly-report-29001", "namespace": "payments",
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly-report", "uid": cron_uid, "controller": true}]}, "spec": {"template": {}}}));
    let job_uid = standin
        .object("jobs", Some("payments"), "nightly-report-29001")
        .unwrap()["metadata"]["uid"]
        .clone();
    standin.seed(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "ledger", "namespace": "payments"}, "spec": {"selector": {}, "template": {}, "serviceName": "ledger"}}));
    let sts_uid = standin
        .object("statefulsets", Some("payments"), "ledger")
        .unwrap()["metadata"]["uid"]
        .clone();

    let router = secret_injector::server::router(injector(&standin, ContextConfig::default()));
    let pod_annotations = json!({"secret-injector.io/store": "vault-backend", "secret-injector.io/env.TOKEN": "payments/report#token"});

    let job = dry_run_owned_by(&router, json!({"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-report-29001", "uid": job_uid, "controller": true}), pod_annotations.clone()).await;
    assert_eq!(job["allowed"], true, "{job}");
    assert!(
        patch_text(&job).contains(r#""name":"report-creds""#),
        "{}",
        patch_text(&job)
    );

    let sts = dry_run_owned_by(&router, json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "ledger", "uid": sts_uid, "controller": true}), pod_annotations.clone()).await;
    assert!(
        patch_text(&sts).contains(r#""name":"ledger-injected""#),
        "{}",
        patch_text(&sts)
    );

    // A controller above a verified ReplicaSet, of a kind we do not read (a Rollout), names
    // the Secret as the API server's ReplicaSet records it, without a GET.
    standin.seed(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "checkout-5d8f", "namespace": "payments",
        "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "checkout", "uid": "u-1", "controller": true}]}, "spec": {"selector": {}}}));
    let rs_uid = standin
        .object("replicasets", Some("payments"), "checkout-5d8f")
        .unwrap()["metadata"]["uid"]
        .clone();
    standin.reset_counts();
    let rollout = dry_run_owned_by(&router, json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-5d8f", "uid": rs_uid, "controller": true}), pod_annotations.clone()).await;
    assert!(patch_text(&rollout).contains(r#""name":"checkout-injected""#));
    // A pod claiming such a controller directly cannot be verified: denied, no request made.
    let custom = dry_run_owned_by(&router, json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "checkout", "uid": "u-1", "controller": true}), pod_annotations).await;
    assert_eq!(custom["allowed"], false);
    assert!(custom["status"]["message"]
        .as_str()
        .unwrap()
        .contains("is not a kind secret-injector can verify"));
    // Only the (cold) managed-Secret lookup went to the API server; no owner was read.
    assert_eq!(
        requests_beyond_watches(&standin),
        standin.count("get", "secrets"),
        "{:?}",
        standin.counts()
    );
}

#[tokio::test]
async fn cluster_store_conditions_select_namespaces_by_name_or_label() {
    let standin = StandIn::start().await;
    seed(&standin, "https://127.0.0.1:9");
    standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments", "labels": {"team": "payments", "tier": "pci", "secret-injector.io/inject": "enabled"}}}));
    let store = |name: &str, conditions: Value| {
        json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "ClusterSecretStore", "metadata": {"name": name},
            "spec": {"provider": {"vault": {"server": "https://127.0.0.1:9", "path": "secret", "auth": {"kubernetes": {"role": "r", "audiences": ["vault"]}}}},
                     "conditions": conditions}})
    };
    standin.seed(store("open", json!([])));
    standin.seed(store(
        "by-label",
        json!([{"namespaceSelector": {"matchLabels": {"tier": "pci"}}}]),
    ));
    standin.seed(store("by-expression", json!([{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["payments", "risk"]}]}}])));
    standin.seed(store(
        "by-name",
        json!([{"namespaces": ["platform"]}, {"namespaces": ["payments"]}]),
    ));
    standin.seed(store("elsewhere", json!([{"namespaces": ["platform"]}, {"namespaceSelector": {"matchLabels": {"tier": "public"}}}])));
    let router = secret_injector::server::router(injector(&standin, ContextConfig::default()));
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "payments-api-7c9f8d6b5", "uid": "5b1f0c6e-0000-4000-8000-000000000001", "controller": true});
    for (store, allowed) in [
        ("open", true),
        ("by-label", true),
        ("by-expression", true),
        ("by-name", true),
        ("elsewhere", false),
    ] {
        let annotations = json!({"secret-injector.io/store": format!("ClusterSecretStore/{store}"), "secret-injector.io/env.A": "x/y#a"});
        let response = dry_run_owned_by(&router, rs.clone(), annotations).await;
        assert_eq!(response["allowed"], allowed, "{store}: {response}");
        if !allowed {
            assert!(response["status"]["message"]
                .as_str()
                .unwrap()
                .contains("does not allow namespace payments"));
        }
    }
}

#[tokio::test]
async fn an_owner_that_reaches_the_index_just_after_its_pod_is_waited_for() {
    let standin = StandIn::start().await;
    seed(&standin, "https://127.0.0.1:9");
    let metrics = Metrics::new();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ctx = Arc::new(Context::new(
        standin.client(),
        ContextConfig {
            endpoints: EndpointPolicy::with_vault(&["https://127.0.0.1:*"]),
            ..ContextConfig::default()
        },
        metrics.clone(),
        DigestKey::random(),
    ));
    ctx.index().wait_until_synced().await;
    let router = secret_injector::server::router(ctx);
    let annotations =
        json!({"secret-injector.io/store": "vault-backend", "secret-injector.io/env.A": "x/y#a"});
    let uid = "7a000000-0000-4000-8000-00000000f00d";
    // The ReplicaSet controller's pod can reach the webhook before the ReplicaSet's watch
    // event reaches the index: the ReplicaSet is created 300 ms after the review arrives.
    let d_uid = standin
        .object("deployments", Some("payments"), "payments-api")
        .unwrap()["metadata"]["uid"]
        .clone();
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "payments-api-55d9", "namespace": "payments", "uid": uid,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "payments-api", "uid": d_uid, "controller": true}]},
        "spec": {"selector": {}}});
    let pending = dry_run_owned_by(
        &router,
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "payments-api-55d9", "uid": uid, "controller": true}),
        annotations.clone(),
    );
    let seed_later = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        standin.seed(rs);
    };
    let (response, ()) = tokio::join!(pending, seed_later);
    assert_eq!(response["allowed"], true, "{response}");
    assert!(patch_text(&response).contains(r#""name":"payments-api-injected""#));
    let text = metrics.encode();
    assert!(
        text.contains(r#"secret_injector_owner_index_waits_total{result="found"} 1"#),
        "{text}"
    );

    // One that never arrives: denied after the wait, naming the uid.
    let started = Instant::now();
    let response = dry_run_owned_by(&router, json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "payments-api-55d9", "uid": "not-the-uid", "controller": true}), annotations).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("ReplicaSet payments-api-55d9 with uid not-the-uid does not exist"),
        "{message}"
    );
}
