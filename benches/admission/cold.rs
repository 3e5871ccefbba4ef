//! Scenarios 3 and 4: cold bursts against the real OpenBao (through the counting proxy).
//!
//! - one identity: a single cold admission (median of three, each a new Deployment and
//!   ServiceAccount) sets the bar; then 200 concurrent admissions of pods of one new
//!   Deployment ⇒ TokenRequests (stand-in records), Vault logins and reads (proxy), Secret
//!   creates (stand-in counter), all allowed, p50/p99.
//! - many identities: 500 pods over 50 Deployments/ServiceAccounts scheduled evenly within 1 s
//!   (open loop; 10 per namespace, within the default per-namespace cold-admission burst of
//!   20) ⇒ all allowed, max ≤ 2 s, logins = 50, reads = 50.
//!
//! TLS connections to the webhook are opened before each burst (no-op reviews), so the figures
//! are the webhook's cold path, not client handshakes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::backends::{self, Backends, Workload};
use crate::common::*;
use crate::proxy::Kind;

async fn admit(client: &reqwest::Client, url: &str, review: &Value) -> (Duration, bool) {
    let started = Instant::now();
    let allowed = match client.post(url).json(review).send().await {
        Ok(r) => r
            .json::<Value>()
            .await
            .map(|v| v["response"]["allowed"] == true && v["response"].get("patch").is_some())
            .unwrap_or(false),
        Err(_) => false,
    };
    (started.elapsed(), allowed)
}

/// Open `n` TLS connections with reviews that need no injection (answered without any call).
async fn open_connections(client: &reqwest::Client, url: &str, n: usize) {
    let mut noop = test_rig::payments::pod_review("noop", None, "default", serde_json::json!({}));
    noop["request"]["namespace"] = "noop".into();
    let noop = Arc::new(noop);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url, noop) = (client.clone(), url.to_string(), noop.clone());
            tokio::spawn(async move { client.post(&url).json(&*noop).send().await.map(|_| ()) })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

pub async fn run(report: &mut Report) {
    println!("\n[3/4] cold bursts (real OpenBao behind a counting proxy)");
    let b = Backends::start().await;
    let standin = b.standin();
    b.seed_namespace("cold-one");
    // 10 Deployments per namespace: within the default cold-admission burst (20) of each.
    for n in 0..5 {
        b.seed_namespace(&format!("cold-many-{n}"));
    }
    let solos: Vec<Workload> = (0..3)
        .map(|i| {
            b.seed_service_account("cold-one", &format!("solo-{i}"));
            b.seed_workload("cold-one", &format!("solo-{i}"))
        })
        .collect();
    b.seed_service_account("cold-one", "burst");
    let burst = b.seed_workload("cold-one", "burst");
    let many: Vec<Workload> = (0..50)
        .map(|i| {
            let ns = format!("cold-many-{}", i / 10);
            b.seed_service_account(&ns, &format!("sa-{i:02}"));
            b.seed_workload(&ns, &format!("app-{i:02}"))
        })
        .collect();
    let webhook = start_webhook(standin, &[]).await;
    let url = format!("{}/mutate", webhook.url);
    let client = webhook.client();
    open_connections(&client, &url, 200).await;

    // A single cold admission, three times (new identity each time).
    let mut singles = Vec::new();
    for (i, w) in solos.iter().enumerate() {
        let (d, ok) = admit(
            &client,
            &url,
            &backends::review(w, &format!("solo-{i}"), "solo"),
        )
        .await;
        assert!(
            ok,
            "single cold admission {i} was not patched; log:\n{}",
            webhook.logs()
        );
        singles.push(d);
    }
    singles.sort();
    let single = singles[1];
    report.info("single cold admission (median of 3)", ms(single));

    // 200 concurrent admissions of pods of one new Deployment.
    standin.reset_counts();
    standin.clear_token_records();
    b.proxy.reset();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let review = backends::review(&burst, "burst", &format!("burst-{i}"));
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { admit(&client, &url, &review).await })
        })
        .collect();
    let mut lat = Vec::new();
    let mut denied = 0;
    for t in tasks {
        let (d, ok) = t.await.unwrap();
        denied += usize::from(!ok);
        lat.push(d);
    }
    let s = Stats::of(lat, denied, 1.0);
    let counts = (
        standin.token_requests().len(),
        b.proxy.count(Kind::Login),
        b.proxy.count(Kind::Read),
        standin.count("create", "secrets"),
    );
    report.check(
        "cold burst 1 identity: TokenRequests, logins, reads, Secret creates",
        format!("{}, {}, {}, {}", counts.0, counts.1, counts.2, counts.3),
        "1, 1, 1, 1",
        counts == (1, 1, 1, 1),
    );
    report.check(
        "cold burst 1 identity: allowed",
        format!("{}/200", 200 - denied),
        "200/200",
        denied == 0,
    );
    let bar = single + Duration::from_millis(50);
    report.check(
        "cold burst 1 identity: p50 / p99",
        format!("{} / {}", ms(s.p50), ms(s.p99)),
        &format!("p99 ≤ single + 50 ms = {}", ms(bar)),
        s.p99 <= bar,
    );
    report.note(format!(
        "cold burst 1 identity: Secret GETs {}, other API requests {:?}",
        standin.count("get", "secrets"),
        standin.counts()
    ));

    // 500 pods over 50 Deployments/ServiceAccounts, evenly within 1 s.
    println!("\n[4/4] 500 pods over 50 identities within 1 s");
    standin.reset_counts();
    standin.clear_token_records();
    b.proxy.reset();
    let many = Arc::new(many);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(500);
    for i in 0..500usize {
        let scheduled = start + Duration::from_millis(2) * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let (client, url, many) = (client.clone(), url.clone(), many.clone());
        tasks.push(tokio::spawn(async move {
            let w = &many[i % 50];
            let review = backends::review(w, &format!("sa-{:02}", i % 50), &format!("many-{i}"));
            let (_, ok) = admit(&client, &url, &review).await;
            (scheduled.elapsed(), ok)
        }));
    }
    let (mut lat, mut denied) = (Vec::new(), 0);
    for t in tasks {
        let (d, ok) = t.await.unwrap();
        denied += usize::from(!ok);
        lat.push(d);
    }
    let s = Stats::of(lat, denied, 1.0);
    report.check(
        "500 pods / 50 identities in 1 s: allowed",
        format!("{}/500", 500 - denied),
        "100 %",
        denied == 0,
    );
    report.check(
        "500 pods / 50 identities in 1 s: max",
        format!("{} (p50 {}, p99 {})", ms(s.max), ms(s.p50), ms(s.p99)),
        "≤ 2 s",
        s.max <= Duration::from_secs(2),
    );
    let (logins, reads) = (b.proxy.count(Kind::Login), b.proxy.count(Kind::Read));
    report.check(
        "500 pods / 50 identities: logins, reads",
        format!("{logins}, {reads}"),
        "50, 50",
        logins == 50 && reads == 50,
    );
    report.info(
        "500 pods / 50 identities: TokenRequests, Secret creates",
        format!(
            "{}, {}",
            standin.token_requests().len(),
            standin.count("create", "secrets")
        ),
    );

    let metrics = webhook.metrics().await;
    for (stage, count, mean, p50, p99) in backends::stage_summary(&metrics) {
        report.info(
            &format!("cold-path stage '{stage}' (both bursts)"),
            format!("n={count} mean {mean:.2} ms, p50 {p50}, p99 {p99}"),
        );
    }
}
