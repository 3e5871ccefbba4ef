//! What every scenario shares: the result table, the ~7.5 KB review, the load generators
//! (open and closed loop), the bare server, starting the webhook, reading its metrics and its
//! /proc entries.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use k8s_standin::StandIn;
use serde_json::{json, Value};
use test_rig::payments::pod_review;
use test_rig::webhook::{Tls, Webhook};

/// The HMAC key test_rig::webhook gives the webhook (so seeded Secrets carry digests the
/// refresher recognises as current).
pub const RIG_HMAC_KEY: &[u8] = b"0123456789abcdef0123456789abcdef-test-key";

/// One figure of the table: what, the measured value (None = not measured, with the reason in
/// `note`), the target and whether it was met (None = informational).
pub struct Row {
    pub figure: String,
    pub value: String,
    pub target: String,
    pub pass: Option<bool>,
    pub note: String,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    /// A figure with a target.
    pub fn check(&mut self, figure: &str, value: String, target: &str, pass: bool) {
        self.rows.push(Row {
            figure: figure.into(),
            value,
            target: target.into(),
            pass: Some(pass),
            note: String::new(),
        });
    }

    /// A figure printed for context, without a target.
    pub fn info(&mut self, figure: &str, value: String) {
        self.rows.push(Row {
            figure: figure.into(),
            value,
            target: "—".into(),
            pass: None,
            note: String::new(),
        });
    }

    /// A figure that could not be measured in this run, and why.
    pub fn not_measured(&mut self, figure: &str, target: &str, reason: &str) {
        self.rows.push(Row {
            figure: figure.into(),
            value: "NOT MEASURED".into(),
            target: target.into(),
            pass: Some(false),
            note: reason.into(),
        });
    }

    pub fn note(&mut self, line: String) {
        println!("  {line}");
        self.notes.push(line);
    }

    pub fn render(&self) -> String {
        let w = self
            .rows
            .iter()
            .map(|r| r.figure.chars().count())
            .max()
            .unwrap_or(10);
        let v = self
            .rows
            .iter()
            .map(|r| r.value.chars().count())
            .max()
            .unwrap_or(10);
        let t = self
            .rows
            .iter()
            .map(|r| r.target.chars().count())
            .max()
            .unwrap_or(10);
        let mut out = String::new();
        for r in &self.rows {
            let verdict = match (r.pass, r.value.as_str()) {
                (_, "NOT MEASURED") => "MISS (not measured)",
                (Some(true), _) => "PASS",
                (Some(false), _) => "MISS",
                (None, _) => "",
            };
            let pad = |s: &str, n: usize| {
                format!("{s}{}", " ".repeat(n.saturating_sub(s.chars().count())))
            };
            out.push_str(&format!(
                "{} | {} | {} | {}{}\n",
                pad(&r.figure, w),
                pad(&r.value, v),
                pad(&r.target, t),
                verdict,
                if r.note.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", r.note)
                }
            ));
        }
        if !self.notes.is_empty() {
            out.push_str("\nnotes:\n");
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }
}

/// Durations of a run, sorted.
pub struct Stats {
    pub count: usize,
    pub errors: usize,
    pub seconds: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Stats {
    pub fn of(mut latencies: Vec<Duration>, errors: usize, seconds: f64) -> Stats {
        latencies.sort();
        if latencies.is_empty() {
            latencies.push(Duration::ZERO);
        }
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        Stats {
            count: latencies.len(),
            errors,
            seconds,
            p50: pct(0.50),
            p99: pct(0.99),
            p999: pct(0.999),
            max: *latencies.last().unwrap(),
        }
    }

    pub fn rate(&self) -> f64 {
        self.count as f64 / self.seconds
    }

    pub fn line(&self) -> String {
        format!(
            "n={} err={} p50={} p99={} p99.9={} max={}",
            self.count,
            self.errors,
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn send(client: &reqwest::Client, url: &str, body: &Arc<Vec<u8>>) -> bool {
    match client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
    {
        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
        Err(_) => false,
    }
}

/// Open-loop load: requests are *scheduled* at a fixed rate and latency is measured from the
/// scheduled time, so a slow server cannot slow the generator down (no coordinated omission).
pub async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    body: Arc<Vec<u8>>,
    rate: u32,
    duration: Duration,
) -> Stats {
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let total = (f64::from(rate) * duration.as_secs_f64()) as u64;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        let (client, url, body) = (client.clone(), url.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            let ok = send(&client, &url, &body).await;
            (scheduled.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for t in tasks {
        let (l, ok) = t.await.unwrap();
        errors += usize::from(!ok);
        latencies.push(l);
    }
    Stats::of(latencies, errors, duration.as_secs_f64())
}

/// Closed loop: `concurrency` workers, each sending its next request when the previous answer
/// has arrived, for `duration`.
pub async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    body: Arc<Vec<u8>>,
    concurrency: usize,
    duration: Duration,
) -> Stats {
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.to_string(), body.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                while start.elapsed() < duration {
                    let t = Instant::now();
                    errors += usize::from(!send(&client, &url, &body).await);
                    lat.push(t.elapsed());
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for w in workers {
        let (l, e) = w.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    Stats::of(all, errors, seconds)
}

/// A ~7.5 KB AdmissionReview: a realistic pod with many labels and env vars.
pub fn big_review(rs: (&str, &str), sa: &str, annotations: Value) -> Value {
    let mut r = pod_review("bench", Some(rs), sa, annotations);
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

/// A bare axum + rustls server: same TLS stack, certificate and accept loop as the webhook,
/// returns a fixed answer and parses nothing.
pub async fn bare_server(cert_dir: &Path) -> (String, tokio::sync::watch::Sender<bool>) {
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

/// The `secret-injector serve` binary at the production log level (info, JSON), with a
/// certificate from its own generator; returns once ready (the rig allows 30 s).
pub async fn start_webhook(standin: &StandIn, extra_args: &[&str]) -> Webhook {
    let webhook = spawn_webhook(standin, extra_args);
    webhook.wait_ready().await;
    webhook
}

/// The binary under test: `SECRET_INJECTOR_BIN` when set (`make bench` sets it to the release
/// build that ships, `cargo build --release`), else the one Cargo built for this bench (bench
/// profile).
pub fn webhook_binary() -> std::path::PathBuf {
    std::env::var_os("SECRET_INJECTOR_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_secret-injector").into())
}

/// As [`start_webhook`], without waiting for readiness (a large index takes longer to sync
/// than the rig's 30 s; the caller waits with its own bound).
pub fn spawn_webhook(standin: &StandIn, extra_args: &[&str]) -> Webhook {
    let generated =
        secret_injector::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1)
            .unwrap();
    let tls = Tls {
        ca_pem: generated.ca_pem,
        cert_pem: generated.cert_pem,
        key_pem: generated.key_pem,
    };
    let binary = webhook_binary();
    // The rig sets SECRET_INJECTOR_LOG=trace for its leak scans; the flag wins over the env.
    let mut args = vec!["--log", "info"];
    args.extend_from_slice(extra_args);
    Webhook::spawn(&binary, tls, standin, &args)
}

/// The sum of every sample of `series` whose labels contain all of `labels`.
pub fn metric(text: &str, series: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(series) && labels.iter().all(|x| l.contains(x))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn wait_metric(
    webhook: &Webhook,
    series: &str,
    at_least: f64,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if metric(&webhook.metrics().await, series, &[]) >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// The webhook is ready (its index synced) — /readyz answers 200.
pub async fn wait_ready(webhook: &Webhook, timeout: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(r) = client
            .get(format!("{}/readyz", webhook.admin_url))
            .send()
            .await
        {
            if r.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Resident memory in MB (10^6 bytes), the unit of the issue's targets.
pub fn rss_mb(webhook: &Webhook) -> f64 {
    webhook.rss_kib().unwrap_or(0) as f64 * 1024.0 / 1e6
}

/// Where the resident memory is: heap and stacks (RssAnon) vs mapped binary and libraries
/// (RssFile), and the thread count, from /proc/<pid>/status.
pub fn rss_split(webhook: &Webhook) -> String {
    let Some(pid) = webhook.pid() else {
        return String::new();
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "anon {} KiB, file {} KiB, threads {}",
        field("RssAnon:"),
        field("RssFile:"),
        field("Threads:")
    )
}

/// User + system CPU seconds of a process so far (/proc/<pid>/stat, fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After ')': state is field 3, so utime (14) is index 11 and stime (15) index 12.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Seconds since `since`, formatted.
pub fn secs(since: Instant) -> String {
    format!("{:.1}s", since.elapsed().as_secs_f64())
}
