//! Issue 9, server side, against the real binary over TLS and the stand-in API: slowloris,
//! maximum-size bodies, SIGTERM under load, `--client-ca-file`, and a multi-byte name.
//! Counts and memory bounds, not latencies.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_standin::StandIn;
use serde_json::{json, Value};
use support::start_webhook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One MiB in KiB (the unit of VmRSS).
const MIB: u64 = 1024;

fn tls_connector(ca_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

fn small_review(uid: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "payments", "operation": "CREATE", "userInfo": {"username": "load"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "payments"},
                "spec": {"containers": [{"name": "app", "image": "x"}]}}}
    })
}

/// 1,000 connections that complete TLS and send half a request head, then stall: every one
/// is closed within the header-read timeout (or at once, past the connection cap), and RSS
/// returns near idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_memory_returns() {
    let standin = StandIn::start().await;
    let header_timeout = Duration::from_secs(2);
    let webhook = start_webhook(
        &standin,
        &["--header-read-timeout", "2s", "--max-connections", "256"],
    )
    .await;
    // Settle, then take the idle figure.
    for i in 0..20 {
        webhook
            .post(
                "/mutate",
                serde_json::to_vec(&small_review(&format!("w{i}"))).unwrap(),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = webhook.rss_kib().unwrap();

    let connector = tls_connector(&webhook.ca_pem, &[b"http/1.1"]);
    let addr = format!("127.0.0.1:{}", port(&webhook.url));
    let peak = Arc::new(AtomicU64::new(idle));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        let pid = webhook.pid().unwrap();
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (connector, addr) = (connector.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let Ok(tcp) = tokio::net::TcpStream::connect(&addr).await else {
                return (t0.elapsed(), "refused");
            };
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let Ok(mut tls) = connector.connect(name, tcp).await else {
                return (t0.elapsed(), "closed during handshake");
            };
            // From here on only the header-read timeout applies.
            let t0 = Instant::now();
            let _ = tls
                .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: app")
                .await;
            let _ = tls.flush().await;
            let mut buf = [0u8; 512];
            loop {
                match tokio::time::timeout(Duration::from_secs(30), tls.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return (t0.elapsed(), "closed"),
                    Ok(Ok(_)) => continue, // a 408 answer, then the close
                    Err(_) => return (t0.elapsed(), "still open after 30s"),
                }
            }
        }));
    }
    // Slowest close after the handshake (the header-read timeout's part), and slowest close
    // of a connection refused past the cap (during its handshake).
    let (mut worst, mut worst_refused) = (Duration::ZERO, Duration::ZERO);
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for t in tasks {
        let (elapsed, outcome) = t.await.unwrap();
        if outcome == "closed" {
            worst = worst.max(elapsed);
        } else {
            worst_refused = worst_refused.max(elapsed);
        }
        *outcomes.entry(outcome).or_default() += 1;
    }
    let all_closed_after = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = webhook.rss_kib().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "slowloris: outcomes {outcomes:?}; slowest close after the handshake {worst:?}, of a refused connection {worst_refused:?}; all closed after {all_closed_after:?}; \
         RSS idle {idle} KiB, peak {peak} KiB, after {after} KiB"
    );
    assert_eq!(outcomes.get("still open after 30s"), None, "{outcomes:?}");
    // Each connection that got through the handshake is closed within the header-read
    // timeout (+ the watchdog's tick and slack for a loaded 2-core machine); each one past the
    // cap within the handshake timeout (5 s) at most.
    assert!(
        worst <= header_timeout + Duration::from_secs(2),
        "a connection stayed open {worst:?} (header timeout {header_timeout:?})"
    );
    assert!(
        worst_refused <= Duration::from_secs(7),
        "a refused connection took {worst_refused:?} to close"
    );
    assert!(peak < 128 * MIB, "peak RSS {peak} KiB over 128 MiB");
    assert!(
        after <= idle + 24 * MIB,
        "RSS {after} KiB did not come back near idle ({idle} KiB)"
    );
    // Still serving.
    let (status, _) = webhook
        .post(
            "/mutate",
            serde_json::to_vec(&small_review("after")).unwrap(),
        )
        .await;
    assert_eq!(status, 200);
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A review of (almost) `size` bytes whose pod decodes into as many small objects as
/// possible: thousands of env entries (`objects` of them), padded to `size` with an
/// annotation.
fn shaped_review(uid: &str, size: usize, objects: usize) -> Vec<u8> {
    let mut review = small_review(uid);
    let env: Vec<Value> = (0..objects)
        .map(|i| json!({"name": format!("E{i}")}))
        .collect();
    review["request"]["object"]["spec"]["containers"][0]["env"] = Value::Array(env);
    let used = serde_json::to_vec(&review).unwrap().len() + 64;
    let pad = size.saturating_sub(used);
    review["request"]["object"]["metadata"]["annotations"] = json!({"pad": "x".repeat(pad)});
    let body = serde_json::to_vec(&review).unwrap();
    assert!(body.len() <= size, "{} > {size}", body.len());
    body
}

/// The most memory-hungry 3 MiB review the gate still admits: as many objects as fit under
/// --max-review-memory (32 MiB by default).
fn max_accepted_review(uid: &str) -> Vec<u8> {
    let size = 3 * 1024 * 1024;
    let (mut lo, mut hi) = (0usize, 20_000usize);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        let est = secret_injector::server::limits::decoded_estimate(&shaped_review(uid, size, mid));
        if est <= 32 * 1024 * 1024 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    shaped_review(uid, size, lo)
}

/// Concurrent maximum-size bodies (3 MiB, shaped to the largest decoded size the gate admits,
/// 32 at once) keep RSS under the Deployment's 128 MiB limit; the review gate answers the
/// excess with 429 + Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_maximum_size_bodies_stay_under_the_memory_limit() {
    let standin = StandIn::start().await;
    let webhook = start_webhook(&standin, &[]).await;
    let idle = webhook.rss_kib().unwrap();
    let body = max_accepted_review("big");
    let pid = webhook.pid().unwrap();
    let peak = Arc::new(AtomicU64::new(idle));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let client = webhook.client();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, url, body) = (client.clone(), webhook.url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            match client
                .post(format!("{url}/mutate"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => {
                    let retry_after = r.headers().get("retry-after").is_some();
                    (r.status().as_u16(), retry_after)
                }
                Err(e) => {
                    eprintln!("transport error: {e:?}");
                    (0, false)
                }
            }
        }));
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for t in tasks {
        let (status, retry_after) = t.await.unwrap();
        if status == 429 {
            assert!(retry_after, "429 without Retry-After");
        }
        *statuses.entry(status).or_default() += 1;
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "max bodies: {} bytes x 32: statuses {statuses:?}; RSS idle {idle} KiB, peak {peak} KiB",
        body.len()
    );
    assert!(
        statuses.get(&200).copied().unwrap_or(0) >= 1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.keys().filter(|s| **s != 200 && **s != 429).count(),
        0,
        "{statuses:?}"
    );
    assert!(
        peak < 128 * 1024,
        "peak RSS {peak} KiB is over the 128 MiB limit"
    );
    // A 3 MiB review that is all tiny objects (150,000 env entries) is refused before it
    // is decoded, naming the limit.
    let hostile = shaped_review("hostile", 3 * 1024 * 1024, 150_000);
    let (status, text) = webhook.post("/mutate", hostile).await;
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("too complex") && text.contains("--max-review-memory"),
        "{text}"
    );
    // One byte over the limit is refused unread.
    let (status, _) = webhook
        .post("/mutate", vec![b' '; 3 * 1024 * 1024 + 1])
        .await;
    assert_eq!(status, 413);
}

/// SIGTERM during a steady 200 requests/s on fresh connections: readiness turns false first,
/// the load generator stops sending 1 s after it sees that (the endpoint-removal delay, less
/// than the default 5 s drain), and not one request fails. The process then exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_request() {
    let standin = StandIn::start().await;
    let mut webhook = start_webhook(
        &standin,
        // The test is about the drain, not the caps: on a shared 2-core machine 200 fresh TLS
        // handshakes a second can pile up past the default connection cap.
        &[
            "--max-connections",
            "4096",
            "--tls-handshake-timeout",
            "20s",
        ],
    )
    .await;
    let ca = reqwest::Certificate::from_pem(webhook.ca_pem.as_bytes()).unwrap();
    // No pooling: every request opens a new connection, as a client routed by a Service
    // that still lists this endpoint would.
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let body = serde_json::to_vec(&small_review("load")).unwrap();
    let not_ready_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let poller = {
        let (client, url, not_ready_at) = (
            reqwest::Client::new(),
            format!("{}/readyz", webhook.admin_url),
            not_ready_at.clone(),
        );
        tokio::spawn(async move {
            loop {
                let ok = matches!(client.get(&url).send().await, Ok(r) if r.status().is_success());
                if !ok {
                    *not_ready_at.lock().unwrap() = Some(Instant::now());
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let start = Instant::now();
    let mut term_sent = false;
    let outstanding = Arc::new(tokio::sync::Semaphore::new(50));
    let mut skipped = 0u64;
    loop {
        tick.tick().await;
        if !term_sent && start.elapsed() >= Duration::from_secs(2) {
            let pid = webhook.pid().unwrap();
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            term_sent = true;
        }
        if let Some(at) = *not_ready_at.lock().unwrap() {
            if at.elapsed() >= Duration::from_secs(1) {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "readiness never turned false"
        );
        // At most 50 requests outstanding: on a starved machine a request is sent when the
        // loop says so, not seconds later (after the endpoint would have been removed).
        let Ok(permit) = outstanding.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let (client, url, body) = (
            client.clone(),
            format!("{}/mutate", webhook.url),
            body.clone(),
        );
        let (sent, failed) = (sent.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            sent.fetch_add(1, Ordering::Relaxed);
            let outcome = match client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => {
                    r.text().await.map(|_| ()).map_err(|e| format!("{e:?}"))
                }
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(format!("{e:?}")),
            };
            if let Err(e) = outcome {
                if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("failed request: {e}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    poller.await.unwrap();
    let status = webhook.wait_exit(Duration::from_secs(20)).await;
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "SIGTERM under load: {sent} requests sent, {failed} failed, {skipped} ticks skipped \
         (50 outstanding at most); exit {status:?}"
    );
    assert!(sent >= 300, "only {sent} requests sent");
    let logs = webhook.logs();
    eprintln!(
        "connection cap hit: {}; handshake timeouts: {}",
        logs.contains("connection limit reached"),
        logs.matches("TLS handshake timed out").count()
    );
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed across the drain"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "did not exit cleanly: {status:?}\n{}",
        webhook.logs()
    );
}

fn client_ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "webhook client CA");
    let cert = params.self_signed(&key).unwrap();
    (rcgen::Issuer::new(params, key), cert.pem())
}

fn client_identity(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>) -> reqwest::Identity {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver-webhook-client");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).unwrap();
    reqwest::Identity::from_pem(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes())
        .unwrap()
}

/// With --client-ca-file: no client certificate, or one from another CA, fails the TLS
/// handshake; one signed by the CA passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_is_required_with_client_ca_file() {
    let standin = StandIn::start().await;
    let (issuer, ca_pem) = client_ca();
    let (other, _) = client_ca();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let webhook = start_webhook(&standin, &["--client-ca-file", ca_file.to_str().unwrap()]).await;
    let server_ca = reqwest::Certificate::from_pem(webhook.ca_pem.as_bytes()).unwrap();
    let body = serde_json::to_vec(&small_review("mtls")).unwrap();
    let send = |identity: Option<reqwest::Identity>| {
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([server_ca.clone()])
            .timeout(Duration::from_secs(10));
        if let Some(id) = identity {
            builder = builder.identity(id);
        }
        let client = builder.build().unwrap();
        let (url, body) = (format!("{}/mutate", webhook.url), body.clone());
        async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let anonymous = send(None).await;
    assert!(
        anonymous.is_err(),
        "no client certificate but got {anonymous:?}"
    );
    let foreign = send(Some(client_identity(&other))).await;
    assert!(
        foreign.is_err(),
        "a certificate from another CA got {foreign:?}"
    );
    assert_eq!(send(Some(client_identity(&issuer))).await.unwrap(), 200);
    // Refused at the TLS layer: the handler never saw those two requests.
    assert!(
        webhook.logs().contains("TLS handshake failed"),
        "the refusals were not at the TLS layer"
    );
}

/// A bare pod with a 300-byte name made of 3-byte characters asks for injection: a clean
/// denial naming secret-injector.io/secret-name, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_byte_name_is_a_clean_denial() {
    let standin = StandIn::start().await;
    standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments", "labels": {"secret-injector.io/inject": "enabled"}}}));
    let webhook = start_webhook(&standin, &[]).await;
    let name = "漢".repeat(100);
    assert_eq!(name.len(), 300);
    let mut review = small_review("mb");
    review["request"]["object"]["metadata"] = json!({"name": name, "namespace": "payments",
        "annotations": {"secret-injector.io/store": "vault-backend", "secret-injector.io/env.DB_PASSWORD": "payments/db#password"}});
    let (_, response) = webhook.mutate(&review).await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("secret-injector.io/secret-name"),
        "{message}"
    );
    assert!(!webhook.logs().contains("panicked"), "the handler panicked");
    let (_, again) = webhook.mutate(&small_review("after")).await;
    assert_eq!(again["allowed"], true);
}
