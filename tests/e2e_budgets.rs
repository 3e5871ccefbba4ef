//! Budgets end to end (issue 9, findings 5, 6, 9): the real binary, the stand-in API and a real
//! OpenBao. Backend concurrency is measured by a small counting TCP proxy in front of OpenBao
//! (test instrumentation only: the backend itself is real).

mod support;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::start_webhook;
use test_rig::payments::*;
use test_rig::webhook::Webhook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards TCP to OpenBao and counts HTTP/1.1 requests in flight: a connection is busy from
/// the first byte of a request until the first byte of its answer (clients do not pipeline).
/// Each request is held `delay` before it is forwarded, so concurrent reads really overlap.
/// The store status probe (`GET /v1/sys/health`, no identity, not a read) is forwarded but
/// not counted.
struct CountingProxy {
    addr: String,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl CountingProxy {
    async fn start(upstream: &str, delay: Duration) -> CountingProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = CountingProxy {
            addr: format!("http://{}", listener.local_addr().unwrap()),
            in_flight: Arc::default(),
            peak: Arc::default(),
            requests: Arc::default(),
        };
        let (in_flight, peak, requests) = (
            proxy.in_flight.clone(),
            proxy.peak.clone(),
            proxy.requests.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.unwrap();
                let counters = (
                    in_flight.clone(),
                    peak.clone(),
                    requests.clone(),
                    Arc::new(AtomicU8::new(IDLE)),
                );
                tokio::spawn(pipe(client, server, counters, delay));
            }
        });
        proxy
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

type Counters = (
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Arc<AtomicU8>,
);

/// Connection states.
const IDLE: u8 = 0;
const COUNTED: u8 = 1;
const PROBE: u8 = 2;

async fn pipe(client: TcpStream, server: TcpStream, counters: Counters, delay: Duration) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (in_flight, peak, requests, busy) = counters;
    let busy_up = busy.clone();
    let in_flight_up = in_flight.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if busy_up.load(Ordering::SeqCst) == IDLE {
                if buf[..n].starts_with(b"GET /v1/sys/health") {
                    busy_up.store(PROBE, Ordering::SeqCst);
                } else {
                    busy_up.store(COUNTED, Ordering::SeqCst);
                    requests.fetch_add(1, Ordering::SeqCst);
                    let now = in_flight_up.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if busy.swap(IDLE, Ordering::SeqCst) == COUNTED {
                in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    futures::join!(up, down);
}

/// A SecretStore `name` in `namespace` for `server`, with `auth` as its auth section.
fn seed_store(rig: &Rig, namespace: &str, name: &str, server: &str, auth: Value) {
    rig.standin.seed(json!({
        "apiVersion": "secret-injector.io/v1alpha1",
        "kind": "SecretStore",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"provider": {"vault": {"server": server, "path": "secret", "version": "v2", "auth": auth}}}
    }));
}

fn payments_auth() -> Value {
    json!({"kubernetes": {"mountPath": "kubernetes", "role": "payments", "audiences": ["vault"]}})
}

/// `count` env annotations reading distinct remote keys `payments/many/kNNNN#v`.
fn many_keys(store: &str, count: usize) -> Value {
    let mut a = serde_json::Map::new();
    a.insert("secret-injector.io/store".into(), json!(store));
    for i in 0..count {
        a.insert(
            format!("secret-injector.io/env.K{i:05}"),
            json!(format!("payments/many/k{i:04}#v")),
        );
    }
    Value::Object(a)
}

async fn admit_deployment_pod(
    rig: &Rig,
    webhook: &Webhook,
    replicaset: &str,
    annotations: Value,
) -> (String, Value) {
    let rs_uid = rig.replicaset_uid(replicaset);
    webhook
        .mutate(&pod_review(
            &format!("uid-{replicaset}"),
            Some((replicaset, &rs_uid)),
            SA,
            annotations,
        ))
        .await
}

/// Admit one pod reading 200 keys through the proxy with `--max-concurrent-reads-per-store
/// limit`; the proxy's peak of requests in flight, and the number of requests.
async fn peak_for_one_pod(rig: &Rig, limit: usize) -> (usize, usize) {
    let proxy = CountingProxy::start(&rig.bao.addr(), Duration::from_millis(25)).await;
    let store = format!("proxied-{limit}");
    seed_store(rig, NS, &store, &proxy.addr, payments_auth());
    let limit_arg = limit.to_string();
    let webhook = start_webhook(
        &rig.standin,
        &["--max-concurrent-reads-per-store", &limit_arg],
    )
    .await;
    let (body, response) =
        admit_deployment_pod(rig, &webhook, REPLICASET, many_keys(&store, 200)).await;
    assert_eq!(response["allowed"], true, "{body}");
    let secret = rig
        .standin
        .object("secrets", Some(NS), "payments-api-injected")
        .unwrap();
    assert_eq!(secret_data(&secret).len(), 200);
    assert_eq!(secret_data(&secret)["K00199"], "v199");
    rig.standin
        .remove("secrets", Some(NS), "payments-api-injected");
    (proxy.peak(), proxy.requests())
}

#[tokio::test]
async fn a_pod_with_many_keys_never_has_more_reads_in_flight_than_the_store_budget() {
    let rig = Rig::start().await;
    for i in 0..200 {
        rig.bao
            .kv_put(
                "secret",
                2,
                &format!("payments/many/k{i:04}"),
                json!({"v": format!("v{i}")}),
            )
            .await;
    }
    // The default budget (8): one login, then 200 reads in chunks of 8.
    let (peak, requests) = peak_for_one_pod(&rig, 8).await;
    assert_eq!(requests, 201, "a login and one read per key");
    assert!(
        (2..=8).contains(&peak),
        "peak of {peak} reads in flight; the budget is 8"
    );
    // The measurement can fail: a larger budget shows a larger peak.
    let (peak, _) = peak_for_one_pod(&rig, 64).await;
    assert!(peak > 8, "with a budget of 64 the proxy saw only {peak}");
}

#[tokio::test]
async fn ten_thousand_keys_are_denied_naming_the_count_and_the_cap_before_any_read() {
    let rig = Rig::start().await;
    let proxy = CountingProxy::start(&rig.bao.addr(), Duration::ZERO).await;
    seed_store(&rig, NS, "proxied", &proxy.addr, payments_auth());
    let webhook = start_webhook(&rig.standin, &[]).await;
    let (body, response) =
        admit_deployment_pod(&rig, &webhook, REPLICASET, many_keys("proxied", 10_000)).await;
    assert_eq!(response["allowed"], false, "{body}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("asks for 10000 remote values") && message.contains("at most 256"),
        "{message}"
    );
    assert!(rig.standin.token_requests().is_empty());
    // No login, no read (the store status probe's sys/health is not counted).
    assert_eq!(proxy.requests(), 0);
    assert!(rig.standin.objects("secrets").is_empty());
}

#[tokio::test]
async fn a_vault_store_without_audiences_mints_tokens_for_the_vault_audience() {
    let rig = Rig::start().await;
    for (name, auth) in [
        (
            "no-audiences",
            json!({"kubernetes": {"mountPath": "kubernetes", "role": "payments"}}),
        ),
        (
            "empty-audiences",
            json!({"kubernetes": {"mountPath": "kubernetes", "role": "payments", "audiences": []}}),
        ),
    ] {
        seed_store(&rig, NS, name, &rig.bao.addr(), auth);
    }
    let webhook = start_webhook(&rig.standin, &[]).await;
    let mut annotations = json!({
        "secret-injector.io/store": "no-audiences",
        "secret-injector.io/env.DB_PASSWORD": "payments/db#password"
    });
    let (body, response) =
        admit_deployment_pod(&rig, &webhook, REPLICASET, annotations.clone()).await;
    assert_eq!(response["allowed"], true, "{body}");
    let requests = rig.standin.token_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].audiences, vec!["vault".to_string()]);
    assert!(!requests[0]
        .audiences
        .iter()
        .any(|a| rig.standin.api_audiences().contains(a)));

    // A store admitted before the upgrade with `audiences: []` is refused at resolution,
    // naming the field, and no token is requested.
    rig.standin.clear_token_records();
    rig.seed_deployment("fraud-worker", "fraud-worker-66b5d");
    annotations["secret-injector.io/store"] = json!("empty-audiences");
    let (_, denied) = admit_deployment_pod(&rig, &webhook, "fraud-worker-66b5d", annotations).await;
    assert_eq!(denied["allowed"], false);
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.provider.vault.auth.kubernetes.audiences")
            && message.contains("at least one audience"),
        "{message}"
    );
    assert!(rig.standin.token_requests().is_empty());
}

/// A second tenant: namespace `fraud`, ServiceAccount, Vault role, store and a Deployment.
async fn seed_second_tenant(rig: &Rig) -> String {
    rig.standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fraud", "labels": {"secret-injector.io/inject": "enabled", "kubernetes.io/metadata.name": "fraud"}}}));
    rig.standin.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA, "namespace": "fraud"}}));
    rig.bao
        .kubernetes_role(
            "kubernetes",
            "fraud",
            &[SA],
            &["fraud"],
            &["payments-read"],
            Some("vault"),
        )
        .await;
    seed_store(
        rig,
        "fraud",
        "vault-backend",
        &rig.bao.addr(),
        json!({"kubernetes": {"mountPath": "kubernetes", "role": "fraud", "audiences": ["vault"]}}),
    );
    let deployment = rig.standin.seed(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "scorer", "namespace": "fraud"},
        "spec": {"selector": {"matchLabels": {"app": "scorer"}}, "template": {"metadata": {"labels": {"app": "scorer"}}, "spec": {"containers": [{"name": "app", "image": "scorer:1"}]}}}
    }));
    let rs = rig.standin.seed(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "scorer-5d8f", "namespace": "fraud",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "scorer", "uid": deployment["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"selector": {"matchLabels": {"app": "scorer"}}}
    }));
    rs["metadata"]["uid"].as_str().unwrap().to_string()
}

fn short_form() -> Value {
    json!({
        "secret-injector.io/store": "vault-backend",
        "secret-injector.io/env.DB_PASSWORD": "payments/db#password"
    })
}

#[tokio::test]
async fn one_namespace_burst_is_limited_while_another_namespace_and_warm_pods_get_through() {
    let rig = Rig::start().await;
    let fraud_rs = seed_second_tenant(&rig).await;
    let webhook = start_webhook(
        &rig.standin,
        &[
            "--cold-admissions-per-namespace",
            "0.01",
            "--cold-admissions-burst",
            "2",
        ],
    )
    .await;
    // Three new workloads in payments at once: the burst of 2 passes, the third is denied.
    for i in 0..3 {
        rig.seed_deployment(&format!("batch-{i}"), &format!("batch-{i}-7f9"));
    }
    let mut answers = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..3 {
        tokens.push(rig.standin.token_requests().len());
        answers.push(
            admit_deployment_pod(&rig, &webhook, &format!("batch-{i}-7f9"), short_form()).await,
        );
    }
    assert_eq!(answers[0].1["allowed"], true, "{}", answers[0].0);
    assert_eq!(answers[1].1["allowed"], true, "{}", answers[1].0);
    assert_eq!(answers[2].1["allowed"], false);
    let message = answers[2].1["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("namespace payments exceeded 0.01 cold admissions per second (burst 2)")
            && message.contains("controller will retry"),
        "{message}"
    );
    assert_eq!(
        rig.standin.token_requests().len(),
        tokens[2],
        "the denied pod cost no token"
    );
    assert!(rig
        .standin
        .object("secrets", Some(NS), "batch-2-injected")
        .is_none());

    // Another tenant is not affected.
    let mut review = pod_review(
        "uid-fraud",
        Some(("scorer-5d8f", &fraud_rs)),
        SA,
        short_form(),
    );
    review["request"]["namespace"] = json!("fraud");
    review["request"]["object"]["metadata"]["namespace"] = json!("fraud");
    let (body, response) = webhook.mutate(&review).await;
    assert_eq!(response["allowed"], true, "{body}");
    assert!(rig
        .standin
        .object("secrets", Some("fraud"), "scorer-injected")
        .is_some());

    // Warm admissions in the exhausted namespace are free: more pods of batch-0.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let (body, response) =
            admit_deployment_pod(&rig, &webhook, "batch-0-7f9", short_form()).await;
        assert_eq!(response["allowed"], true, "{body}");
    }
    let metrics = webhook.metrics().await;
    assert!(
        metrics.contains("secret_injector_cold_admissions_limited_total 1"),
        "{metrics}"
    );
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn the_force_sync_map_does_not_grow_with_unrelated_workloads() {
    let rig = Rig::start().await;
    let webhook = start_webhook(
        &rig.standin,
        &["--min-refresh-interval", "1s", "--lease-duration", "3s"],
    )
    .await;
    let (body, response) = admit_deployment_pod(&rig, &webhook, REPLICASET, short_form()).await;
    assert_eq!(response["allowed"], true, "{body}");

    // 600 workloads that own no managed Secret, in 30 namespaces (and in payments), changed
    // and some deleted after being created.
    for i in 0..600 {
        let ns = if i % 10 == 0 {
            NS.to_string()
        } else {
            format!("team-{}", i % 30)
        };
        let (kind, plural) = match i % 3 {
            0 => ("Deployment", "deployments"),
            1 => ("StatefulSet", "statefulsets"),
            _ => ("DaemonSet", "daemonsets"),
        };
        let name = format!("unrelated-{i}");
        let mut object = rig.standin.seed(json!({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "x:1"}]}}}
        }));
        object["metadata"]["annotations"] = json!({"secret-injector.io/force-sync": "now"});
        rig.standin.seed(object);
        if i % 4 == 0 {
            rig.standin.remove(plural, Some(&ns), &name);
        }
    }
    // A force-sync on the one tracked Deployment, after all of that: once it has been acted
    // on, the watch has delivered every earlier Deployment event too.
    rig.bao
        .kv_put(
            "secret",
            2,
            "payments/db",
            json!({"username": DB_USERNAME, "password": "after_unrelated_SENTINEL"}),
        )
        .await;
    let mut d = rig
        .standin
        .object("deployments", Some(NS), DEPLOYMENT)
        .unwrap();
    d["metadata"]["annotations"] = json!({"secret-injector.io/force-sync": "2026-11-30T09:00:00Z"});
    rig.standin.seed(d);
    wait_for("the forced refresh", Duration::from_secs(10), || {
        rig.standin
            .object("secrets", Some(NS), "payments-api-injected")
            .is_some_and(|s| secret_data(&s)["DB_PASSWORD"] == "after_unrelated_SENTINEL")
    })
    .await;
    let metrics = webhook.metrics().await;
    assert_eq!(
        metric(&metrics, "secret_injector_refresher_tracked_workloads"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "secret_injector_managed_secrets"),
        Some(1.0)
    );
}
