//! `make bench`: admission latency and memory of the real binary, measured against a bare
//! axum + rustls server (same TLS stack and certificate type, fixed answer, parses nothing)
//! in the same run, with the same open-loop load generator.
//!
//! Figures printed (and written to target/bench-results.txt):
//! - warm admission (the workload's managed Secret exists and is current, same ServiceAccount)
//!   vs the bare server: p50 / p99 / p99.9 / max at a fixed request rate, ~7.5 KB reviews;
//! - RSS of the webhook idle, after the load, and while its refresher tracks 10,000 managed
//!   Secrets.
//!
//! The load generator runs in this process on the same 2 cores as both servers, so absolute
//! numbers include its cost; the ratio against the bare server is the meaningful figure.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use k8s_openapi::api::core::v1::Secret;
use k8s_standin::StandIn;
use secret_injector::k8s::{Owner, OwnerKind, WorkloadKind};
use secret_injector::managed::{self, DigestKey, Recorded, Target};
use secret_injector::redact::SecretBytes;
use secret_injector::spec::{self, ParseContext};
use serde_json::{json, Value};
use test_rig::payments::{pod_review, NS, REPLICASET, SA};
use test_rig::webhook::{Tls, Webhook};

const RATE: u32 = 1000;
const SECONDS: u64 = 10;
const TRACKED: usize = 10_000;

fn annotations() -> Value {
    json!({
        "secret-injector.io/store": "vault-backend",
        "secret-injector.io/env.DB_USERNAME": "payments/db#username",
        "secret-injector.io/env.DB_PASSWORD": "payments/db#password"
    })
}

/// A ~7.5 KB AdmissionReview: a realistic pod with many labels and env vars.
fn review(rs_uid: &str) -> Value {
    let mut r = pod_review("bench", Some((REPLICASET, rs_uid)), SA, annotations());
    let pod = &mut r["request"]["object"];
    for i in 0..60 {
        pod["metadata"]["labels"][format!("bench.example.com/label-{i}")] =
            json!(format!("value-{i:04}"));
        pod["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": format!("SETTING_{i}"), "value": format!("some-configuration-value-{i:06}")}));
    }
    r
}

/// Seed the payments namespace so admissions are warm: store, owners, and a current managed
/// Secret built by the same code the webhook uses.
fn seed_warm(standin: &StandIn) -> String {
    standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"secret-injector.io/inject": "enabled"}}}));
    standin.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA, "namespace": NS}}));
    standin.seed(json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "SecretStore", "metadata": {"name": "vault-backend", "namespace": NS},
        "spec": {"provider": {"vault": {"server": "https://127.0.0.1:9", "path": "secret", "auth": {"kubernetes": {"role": "payments", "audiences": ["vault"]}}}}}}));
    let d = standin.seed(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "payments-api", "namespace": NS}, "spec": {"selector": {}, "template": {}}}));
    let deployment_uid = d["metadata"]["uid"].as_str().unwrap().to_string();
    let rs = standin.seed(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": REPLICASET, "namespace": NS,
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "payments-api", "uid": deployment_uid, "controller": true}]}, "spec": {"selector": {}}}));
    let names = vec!["app".to_string()];
    let ann: std::collections::BTreeMap<String, String> =
        serde_json::from_value(annotations()).unwrap();
    let spec = spec::parse(
        &ann,
        &ParseContext {
            workload_name: Some("payments-api"),
            container_names: &names,
            min_refresh_interval: Duration::from_secs(10),
        },
    )
    .unwrap()
    .unwrap();
    let item = &spec.items[0];
    let owner = Owner {
        namespace: NS.into(),
        kind: OwnerKind::Known(WorkloadKind::Deployment),
        name: "payments-api".into(),
        uid: Some(deployment_uid),
    };
    let target = Target {
        namespace: NS.into(),
        name: item.secret_name.clone(),
        record: Recorded {
            source: item.source(),
            service_account: SA.into(),
            refresh_interval: item.refresh_interval,
            owner,
            rollout: item.rollout,
            lease: None,
        },
    };
    let data = [("DB_USERNAME", "u"), ("DB_PASSWORD", "p")]
        .iter()
        .map(|(k, v)| (k.to_string(), SecretBytes::new(v.as_bytes().to_vec())))
        .collect();
    let secret: Secret = managed::build(
        &target,
        &data,
        &DigestKey::random(),
        k8s_openapi::jiff::Timestamp::now(),
    );
    standin.seed(serde_json::to_value(&secret).unwrap());
    rs["metadata"]["uid"].as_str().unwrap().to_string()
}

struct Stats {
    count: usize,
    errors: usize,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

/// Open-loop load: requests are *scheduled* at a fixed rate and latency is measured from the
/// scheduled time, so a slow server cannot slow the generator down (no coordinated omission).
async fn load(
    client: &reqwest::Client,
    url: &str,
    body: Arc<Vec<u8>>,
    rate: u32,
    seconds: u64,
) -> Stats {
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let total = rate as u64 * seconds;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + period * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let client = client.clone();
        let url = url.to_string();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let ok = match client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await
            {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (scheduled.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for t in tasks {
        let (l, ok) = t.await.unwrap();
        if !ok {
            errors += 1;
        }
        latencies.push(l);
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Stats {
        count: latencies.len(),
        errors,
        p50: pct(0.50),
        p99: pct(0.99),
        p999: pct(0.999),
        max: *latencies.last().unwrap(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn bare_server(cert_dir: &std::path::Path) -> (String, tokio::sync::watch::Sender<bool>) {
    let cert = secret_injector::server::tls::ReloadingCert::load(
        cert_dir.join("tls.crt"),
        cert_dir.join("tls.key"),
    )
    .unwrap();
    let fixed = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"bench","allowed":true}}"#;
    let app = Router::new().route(
        "/mutate",
        post(move || async move { ([("content-type", "application/json")], fixed) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}/mutate",
        listener.local_addr().unwrap().port()
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(secret_injector::server::serve_tls(
        listener,
        cert.server_config(None),
        app,
        secret_injector::server::limits::LimitArgs::default(),
        rx,
    ));
    (url, tx)
}

async fn wait_metric(webhook: &Webhook, series: &str, at_least: f64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let text = webhook.metrics().await;
        let v: f64 = text
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        if v >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The `secret-injector serve` binary with a certificate from its own generator, as
/// tests/support/mod.rs starts it for the tests (a bench cannot share that module).
async fn start_webhook(standin: &StandIn, extra_args: &[&str]) -> Webhook {
    let generated =
        secret_injector::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1)
            .unwrap();
    let tls = Tls {
        ca_pem: generated.ca_pem,
        cert_pem: generated.cert_pem,
        key_pem: generated.key_pem,
    };
    let binary = Path::new(env!("CARGO_BIN_EXE_secret-injector"));
    Webhook::start(binary, tls, standin, extra_args).await
}
fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let standin = StandIn::start().await;
        let rs_uid = seed_warm(&standin);
        let webhook = start_webhook(&standin, &["--allowed-vault-servers", "https://127.0.0.1:9"]).await;
        let body = Arc::new(serde_json::to_vec(&review(&rs_uid)).unwrap());
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let mut report = vec![format!("AdmissionReview body: {} bytes; load: {RATE} req/s open-loop for {SECONDS}s; {cores} cores shared by load generator and servers", body.len())];

        // Sanity: the admission is warm (patched, no TokenRequest, no backend).
        let (_, response) = webhook.mutate(&serde_json::from_slice(&body).unwrap()).await;
        assert_eq!(response["allowed"], true, "{response}");
        assert!(response.get("patch").is_some());
        assert!(standin.token_requests().is_empty(), "the bench must measure the warm path");
        standin.reset_counts();
        tokio::time::sleep(Duration::from_secs(1)).await;
        report.push(format!("webhook RSS idle: {} KiB", webhook.rss_kib().unwrap_or(0)));

        let client = webhook.client();
        let (bare_url, _stop) = bare_server(webhook.dir()).await;
        let webhook_url = format!("{}/mutate", webhook.url);
        // Warm up connections and caches on both.
        load(&client, &bare_url, body.clone(), 200, 1).await;
        load(&client, &webhook_url, body.clone(), 200, 1).await;

        let bare = load(&client, &bare_url, body.clone(), RATE, SECONDS).await;
        standin.reset_counts();
        let warm = load(&client, &webhook_url, body.clone(), RATE, SECONDS).await;
        let api_calls = standin.total_requests();
        for (name, s) in [("bare axum+rustls", &bare), ("secret-injector warm", &warm)] {
            report.push(format!(
                "{name:<22} n={} errors={} p50={} p99={} p99.9={} max={}",
                s.count, s.errors, ms(s.p50), ms(s.p99), ms(s.p999), ms(s.max)
            ));
        }
        report.push(format!(
            "warm/bare p99 ratio: {:.2} (target ≤ 1.5); p99.9 ratio: {:.2} (target ≤ 2)",
            warm.p99.as_secs_f64() / bare.p99.as_secs_f64(),
            warm.p999.as_secs_f64() / bare.p999.as_secs_f64()
        ));
        report.push(format!(
            "Kubernetes API calls during the warm run: {api_calls} ({:.3} per admission; owner chains, stores and managed Secrets are answered from memory)",
            api_calls as f64 / warm.count as f64
        ));
        report.push(format!("webhook RSS after load: {} KiB", webhook.rss_kib().unwrap_or(0)));

        // Memory with 10,000 managed Secrets tracked by the leader's refresher (interval 1h,
        // so the spread schedule starts few refreshes during the measurement).
        for i in 0..TRACKED {
            let mut s: Value = standin.object("secrets", Some(NS), "payments-api-injected").unwrap();
            s["metadata"]["name"] = json!(format!("bulk-{i:05}"));
            s["metadata"].as_object_mut().unwrap().remove("uid");
            s["metadata"].as_object_mut().unwrap().remove("resourceVersion");
            standin.seed(s);
        }
        let tracked = wait_metric(&webhook, "secret_injector_managed_secrets", (TRACKED + 1) as f64, Duration::from_secs(120)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        report.push(format!(
            "webhook RSS tracking {} managed Secrets: {} KiB{}",
            TRACKED + 1,
            webhook.rss_kib().unwrap_or(0),
            if tracked { "" } else { " (refresher had not caught up within 120s)" }
        ));

        println!("\n=== secret-injector bench ===");
        for line in &report {
            println!("{line}");
        }
        let out = format!("{}/target/bench-results.txt", env!("CARGO_MANIFEST_DIR"));
        std::fs::write(&out, report.join("\n") + "\n").unwrap();
        println!("(written to {out})");
    });
}
