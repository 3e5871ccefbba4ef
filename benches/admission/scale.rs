//! Scenarios 5 and 6: memory with N tracked managed Secrets, and the refresher at scale.
//!
//! The stand-in is seeded as a cluster with that many workloads would be: per namespace (opted
//! in, one SecretStore) 100 Deployments, each with its ReplicaSet and its managed Secret, over
//! 10 ServiceAccounts. Secrets are built by the webhook's own code with the values in OpenBao
//! and the rig's HMAC key, so every refresh finds them current.
//!
//! Refresher: the first `scale.tracked` Secrets carry a short refresh interval. Over
//! `scale.intervals` intervals after the webhook has them all tracked: backend reads (proxy,
//! with times), 1-s windows, Secret writes (stand-in), API requests beside the watches
//! (stand-in counters), refreshes (webhook metric) and the webhook's CPU (/proc/<pid>/stat).

use std::time::{Duration, Instant};

use crate::backends::{self, Backends};
use crate::common::*;
use crate::proxy::Kind;
use crate::Scale;

const PER_NAMESPACE: usize = 100;
const ACCOUNTS: usize = 10;

/// Seed namespaces `from..to` (each PER_NAMESPACE Secrets) with `interval`.
fn seed(b: &Backends, from: usize, to: usize, interval: &str) {
    let key = backends::rig_digest_key();
    for n in from..to {
        let ns = format!("scale-{n:04}");
        b.seed_namespace(&ns);
        for a in 0..ACCOUNTS {
            b.seed_service_account(&ns, &format!("sa-{a}"));
        }
        for i in 0..PER_NAMESPACE {
            let w = b.seed_workload(&ns, &format!("app-{i:03}"));
            let secret =
                backends::managed_secret(&w, &format!("sa-{}", i % ACCOUNTS), interval, &key);
            b.standin().seed(secret);
        }
    }
}

/// Wait until the webhook is ready and its refresher tracks `n` Secrets.
async fn tracked(webhook: &test_rig::webhook::Webhook, n: usize, timeout: Duration) -> bool {
    wait_ready(webhook, timeout).await
        && wait_metric(
            webhook,
            "secret_injector_managed_secrets",
            n as f64,
            timeout,
        )
        .await
}

/// API requests beside the watches (watch, list), leader election (leases), the TokenRequests
/// of logins and OpenBao's TokenReviews (not the webhook's), which are listed in the notes.
fn api_beside_watch(counts: &std::collections::BTreeMap<(String, String), u64>) -> u64 {
    counts
        .iter()
        .filter(|((verb, res), _)| {
            verb != "watch"
                && verb != "list"
                && !["leases", "serviceaccounts/token", "tokenreviews"].contains(&res.as_str())
        })
        .map(|(_, c)| c)
        .sum()
}

pub async fn run(report: &mut Report, scale: &Scale) {
    println!("\n[5/6] memory and refresher at scale");
    let b = Backends::start().await;
    let n1 = scale.tracked;
    let interval = format!("{}s", scale.refresh_interval.as_secs());
    let t = Instant::now();
    seed(&b, 0, n1 / PER_NAMESPACE, &interval);
    report.note(format!(
        "seeded {n1} managed Secrets + {n1} Deployments + {n1} ReplicaSets + {} namespaces/stores in {}",
        n1 / PER_NAMESPACE,
        secs(t)
    ));

    let min = format!("{}s", scale.refresh_interval.as_secs().min(10));
    let t = Instant::now();
    let mut webhook = spawn_webhook(b.standin(), &["--min-refresh-interval", &min]);
    if !tracked(&webhook, n1, Duration::from_secs(300)).await {
        report.not_measured(
            &format!("RSS with {n1} tracked Secrets"),
            "≤ 48 MB",
            "the refresher did not track them all within 300 s",
        );
        return;
    }
    report.note(format!(
        "webhook ready and tracking {n1} Secrets {} after its start (index sync + leader election)",
        secs(t)
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mb(&webhook);
    report.note(format!("RSS split: {}", rss_split(&webhook)));
    report.check(
        &format!("RSS with {n1} tracked Secrets"),
        format!("{rss:.1} MB"),
        if n1 == 10_000 {
            "≤ 48 MB"
        } else {
            "≤ 48 MB (at 10,000)"
        },
        rss <= 48.0,
    );

    // Refresher at scale.
    println!("\n[6/6] refresher: {n1} Secrets every {interval}");
    let pid = webhook.pid().unwrap();
    let before_metrics = webhook.metrics().await;
    let refreshes_before = metric(&before_metrics, "secret_injector_refreshes_total", &[]);
    b.standin().reset_counts();
    let secret_writes_before = b.standin().writes("secrets");
    let cpu_before = cpu_seconds(pid);
    let window_start = Instant::now();
    let window = scale.refresh_interval * scale.intervals;
    tokio::time::sleep(window).await;
    let cpu = cpu_seconds(pid) - cpu_before;
    let after_metrics = webhook.metrics().await;
    let refreshes =
        metric(&after_metrics, "secret_injector_refreshes_total", &[]) - refreshes_before;
    let counts = b.standin().counts();
    let writes = b.standin().writes("secrets") - secret_writes_before;
    let reads = b.proxy.times(Kind::Read, window_start);
    let reads_in = reads
        .iter()
        .filter(|t| t.duration_since(window_start) < window)
        .count();
    let per_interval = reads_in as f64 / f64::from(scale.intervals);
    report.check(
        "refresher: backend reads per interval",
        format!(
            "{per_interval:.0} (N = {n1}, {:.3} × N)",
            per_interval / n1 as f64
        ),
        "≤ 1.05 × N",
        per_interval <= 1.05 * n1 as f64 && per_interval > 0.0,
    );
    let seconds = window.as_secs() as usize;
    let mut bins = vec![0usize; seconds.max(1)];
    for r in &reads {
        let s = r.duration_since(window_start).as_secs() as usize;
        if s < bins.len() {
            bins[s] += 1;
        }
    }
    let mean = reads_in as f64 / bins.len() as f64;
    let peak = bins.iter().copied().max().unwrap_or(0);
    report.check(
        "refresher: busiest 1-s window / mean",
        format!("{peak} / {mean:.1} = {:.2}×", peak as f64 / mean.max(1e-9)),
        "≤ 3×",
        (peak as f64) <= 3.0 * mean && mean > 0.0,
    );
    let results: Vec<String> = after_metrics
        .lines()
        .filter(|l| l.starts_with("secret_injector_refreshes_total{"))
        .map(|l| {
            l.trim_start_matches("secret_injector_refreshes_total")
                .to_string()
        })
        .collect();
    report.note(format!(
        "refreshes in the window: {refreshes:.0} ({})",
        results.join(", ")
    ));
    report.check(
        "refresher: Secret writes when nothing changed",
        format!("{writes}"),
        "0",
        writes == 0,
    );
    let beside = api_beside_watch(&counts);
    report.check(
        "refresher: API requests per refresh beyond the watch",
        format!(
            "{:.3} ({beside} in {refreshes:.0} refreshes)",
            beside as f64 / refreshes.max(1.0)
        ),
        "0",
        beside == 0,
    );
    report.note(format!(
        "API requests in the refresher window (verb, resource): {:?}",
        counts
    ));
    report.info(
        "refresher: webhook CPU seconds per 1,000 refreshes",
        format!(
            "{:.3} s ({cpu:.1} s for {refreshes:.0})",
            cpu / refreshes.max(1.0) * 1000.0
        ),
    );
    webhook.stop().await;

    // Memory with n2 tracked Secrets: the rest with a 1 h interval, a fresh webhook.
    let n2 = scale.tracked_large;
    let t = Instant::now();
    seed(&b, n1 / PER_NAMESPACE, n2 / PER_NAMESPACE, "1h");
    report.note(format!(
        "seeded up to {n2} managed Secrets (and owners) in {}",
        secs(t)
    ));
    b.standin().reset_counts();
    let t = Instant::now();
    let webhook = spawn_webhook(b.standin(), &["--min-refresh-interval", &min]);
    if !tracked(&webhook, n2, Duration::from_secs(420)).await {
        report.not_measured(
            &format!("RSS with {n2} tracked Secrets"),
            "≤ 256 MB",
            "the refresher did not track them all within 420 s",
        );
        return;
    }
    report.note(format!(
        "webhook ready and tracking {n2} Secrets {} after its start (index sync + leader election; the previous leader's lease expires first)",
        secs(t)
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mb(&webhook);
    report.note(format!("RSS split: {}", rss_split(&webhook)));
    report.check(
        &format!("RSS with {n2} tracked Secrets"),
        format!("{rss:.1} MB"),
        if n2 == 100_000 {
            "≤ 256 MB"
        } else {
            "≤ 256 MB (at 100,000)"
        },
        rss <= 256.0,
    );
}
