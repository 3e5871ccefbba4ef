//! Scenarios 1 and 2: warm admission against the bare server — open loop at fixed rates, then
//! the closed-loop throughput sweep — plus the idle and after-load RSS.
//!
//! Warm: the workload's managed Secret exists and is current, same ServiceAccount; the store's
//! server is unreachable on purpose (https://127.0.0.1:9), so any backend call would fail.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_standin::StandIn;
use secret_injector::k8s::{Owner, OwnerKind, WorkloadKind};
use secret_injector::managed::{self, DigestKey, Recorded, Target};
use secret_injector::redact::SecretBytes;
use secret_injector::spec::{self, ParseContext};
use serde_json::{json, Value};
use test_rig::payments::{NS, REPLICASET, SA};

use crate::common::*;
use crate::Scale;

fn annotations() -> Value {
    json!({
        "secret-injector.io/store": "vault-backend",
        "secret-injector.io/env.DB_USERNAME": "payments/db#username",
        "secret-injector.io/env.DB_PASSWORD": "payments/db#password"
    })
}

/// Seed the payments namespace so admissions are warm: store, owners, and a current managed
/// Secret built by the same code the webhook uses. Returns the ReplicaSet's uid.
pub fn seed_warm(standin: &StandIn) -> String {
    standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"secret-injector.io/inject": "enabled", "kubernetes.io/metadata.name": NS}}}));
    standin.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA, "namespace": NS}}));
    standin.seed(json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "SecretStore", "metadata": {"name": "vault-backend", "namespace": NS},
        "spec": {"provider": {"vault": {"server": "https://127.0.0.1:9", "path": "secret", "auth": {"kubernetes": {"role": "payments", "audiences": ["vault"]}}}}}}));
    let d = standin.seed(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "payments-api", "namespace": NS}, "spec": {"selector": {}, "template": {}}}));
    let deployment_uid = d["metadata"]["uid"].as_str().unwrap().to_string();
    let rs = standin.seed(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": REPLICASET, "namespace": NS,
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "payments-api", "uid": deployment_uid, "controller": true}]}, "spec": {"selector": {}}}));
    let names = vec!["app".to_string()];
    let ann: BTreeMap<String, String> = serde_json::from_value(annotations()).unwrap();
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
    let target = Target {
        namespace: NS.into(),
        name: item.secret_name.clone(),
        record: Recorded {
            source: item.source(),
            service_account: SA.into(),
            refresh_interval: item.refresh_interval,
            owner: Owner {
                namespace: NS.into(),
                kind: OwnerKind::Known(WorkloadKind::Deployment),
                name: "payments-api".into(),
                uid: Some(deployment_uid),
            },
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

/// The warm review's body (~7.5 KB).
pub fn warm_body(rs_uid: &str) -> Vec<u8> {
    serde_json::to_vec(&big_review((REPLICASET, rs_uid), SA, annotations())).unwrap()
}

pub async fn run(report: &mut Report, scale: &Scale) {
    println!("\n[1/2] warm admission vs bare axum+rustls");
    let standin = StandIn::start().await;
    let rs_uid = seed_warm(&standin);
    let webhook = start_webhook(
        &standin,
        &["--allowed-vault-servers", "https://127.0.0.1:9"],
    )
    .await;
    let body = Arc::new(warm_body(&rs_uid));
    report.note(format!(
        "warm review body {} bytes; webhook at production settings (log level info, JSON; --max-concurrent-reviews 8, --max-connections 256 — the bare server has the same accept loop and connection cap, so `err` under overload is refused connections on either)",
        body.len()
    ));

    // Sanity: the admission is warm (patched, no TokenRequest, no backend).
    let webhook_url = format!("{}/mutate", webhook.url);
    let client = webhook.client();
    let r = client
        .post(&webhook_url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(answer["response"].get("patch").is_some(), "{answer}");
    assert!(
        standin.token_requests().is_empty(),
        "the bench must measure the warm path"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_mb(&webhook);
    report.note(format!("RSS idle split: {}", rss_split(&webhook)));
    report.check("RSS idle", format!("{idle:.1} MB"), "≤ 20 MB", idle <= 20.0);

    let (bare_url, _stop) = bare_server(webhook.dir()).await;
    // Warm up connections on both.
    open_loop(
        &client,
        &bare_url,
        body.clone(),
        200,
        Duration::from_secs(1),
    )
    .await;
    open_loop(
        &client,
        &webhook_url,
        body.clone(),
        200,
        Duration::from_secs(1),
    )
    .await;

    let mut api_calls = 0;
    let mut warm_admissions = 0;
    for rate in [1000u32, 3000] {
        let bare = open_loop(&client, &bare_url, body.clone(), rate, scale.open_loop).await;
        standin.reset_counts();
        let warm = open_loop(&client, &webhook_url, body.clone(), rate, scale.open_loop).await;
        api_calls += standin.total_requests();
        warm_admissions += warm.count;
        report.info(&format!("bare   {rate} req/s open loop"), bare.line());
        report.info(&format!("warm   {rate} req/s open loop"), warm.line());
        let r99 = warm.p99.as_secs_f64() / bare.p99.as_secs_f64();
        let r999 = warm.p999.as_secs_f64() / bare.p999.as_secs_f64();
        let errors_ok = warm.errors == 0 && bare.errors == 0;
        if rate == 1000 {
            report.check(
                "warm p99 / bare p99 at 1,000 req/s",
                format!("{r99:.2}×"),
                "≤ 1.3×",
                r99 <= 1.3 && errors_ok,
            );
            report.check(
                "warm p99.9 / bare p99.9 at 1,000 req/s",
                format!("{r999:.2}×"),
                "≤ 1.5×",
                r999 <= 1.5 && errors_ok,
            );
        } else {
            report.info(
                &format!("warm/bare p99 and p99.9 at {rate} req/s"),
                format!("{r99:.2}× / {r999:.2}×"),
            );
        }
    }
    report.check(
        "API-server requests on warm admissions",
        format!("{api_calls} in {warm_admissions} admissions"),
        "0",
        api_calls == 0,
    );

    println!("\n[2/2] throughput: closed loop, same concurrency, p99 < 10 ms");
    let mut best = [(0.0f64, 0usize), (0.0, 0)];
    for &c in &scale.concurrency {
        for (i, url) in [&bare_url, &webhook_url].into_iter().enumerate() {
            let s = closed_loop(&client, url, body.clone(), c, scale.closed_loop).await;
            let ok = s.p99 < Duration::from_millis(10) && s.errors == 0;
            println!(
                "  {} c={c:<3} {:>8.0} req/s {}{}",
                ["bare", "warm"][i],
                s.rate(),
                s.line(),
                if ok {
                    ""
                } else {
                    "  (p99 ≥ 10 ms or errors)"
                }
            );
            if ok && s.rate() > best[i].0 {
                best[i] = (s.rate(), c);
            }
        }
    }
    report.info(
        "bare throughput (p99 < 10 ms)",
        format!("{:.0} req/s at c={}", best[0].0, best[0].1),
    );
    report.info(
        "warm throughput (p99 < 10 ms)",
        format!("{:.0} req/s at c={}", best[1].0, best[1].1),
    );
    let ratio = if best[0].0 > 0.0 {
        best[1].0 / best[0].0
    } else {
        0.0
    };
    report.check(
        "warm throughput / bare throughput",
        format!("{ratio:.2}"),
        "≥ 0.7",
        ratio >= 0.7,
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_mb(&webhook);
    report.info("RSS after load", format!("{after:.1} MB"));
}
