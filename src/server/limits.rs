//! Limits of the HTTPS listener: the hyper builder's timeouts and HTTP/2 limits, the
//! per-connection idle watchdog, and the review gate (concurrency cap, overload answer, body
//! limit and body timeout) in front of `/mutate` and `/validate`.
//!
//! Memory under hostile load is bounded by construction: at most `max_connections`
//! connections (each a TLS session plus an HTTP read buffer no larger than
//! `max_header_size`), and at most `max_concurrent_reviews` request bodies of at most
//! `max_request_body` bytes buffered and decoded at once. Requests waiting for a slot have
//! only their headers read.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::Semaphore;
use tracing::debug;

pub use crate::config::LimitArgs;

impl Default for LimitArgs {
    /// The documented defaults (flag defaults; `SECRET_INJECTOR_*` variables still apply).
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            limits: LimitArgs,
        }
        Defaults::parse_from(["secret-injector"]).limits
    }
}

/// The hyper connection builder with every limit applied. The timer is what makes the
/// header-read timeout and HTTP/2 keep-alive work at all: without it they are silently off.
pub fn http_builder(limits: &LimitArgs) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_size.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .initial_stream_window_size(u32::try_from(limits.http2_window).unwrap_or(u32::MAX))
        .initial_connection_window_size(u32::try_from(limits.http2_window).unwrap_or(u32::MAX))
        .adaptive_window(false)
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX))
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        // Rapid-reset (CVE-2023-44487) style abuse: few pending resets before GOAWAY.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256));
    builder
}

/// Requests in flight on one connection and when it last did something, for the idle
/// watchdog in the accept loop.
#[derive(Debug)]
pub struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `born` of the last request start or end.
    last_ms: AtomicU64,
    any_request: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            any_request: AtomicBool::new(false),
        }
    }
}

/// Decrements the in-flight count when the response is ready (or the request is dropped).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the watchdog decides for a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Idle {
    /// Busy, or quiet for less than its limit.
    Keep,
    /// No request ever started within the header-read timeout (a client that connects and
    /// trickles, or never sends, its first request): close now.
    NeverSpoke,
    /// No request for `idle_timeout`: close gracefully (HTTP/2 GOAWAY).
    Idle,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Release);
    }

    pub fn start(self: &Arc<Self>) -> InFlight {
        self.any_request.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// True once a request has started on this connection.
    pub fn served_any(&self) -> bool {
        self.any_request.load(Ordering::Acquire)
    }

    pub fn check(&self, limits: &LimitArgs) -> Idle {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Idle::Keep;
        }
        let quiet = self
            .born
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Acquire)));
        if !self.any_request.load(Ordering::Acquire) {
            if quiet >= limits.header_read_timeout {
                return Idle::NeverSpoke;
            }
        } else if quiet >= limits.idle_timeout {
            return Idle::Idle;
        }
        Idle::Keep
    }
}

/// The concurrency cap in front of the review handlers; also reads the body (bounded in size
/// and time) so that only reviews holding a slot buffer one.
#[derive(Clone, Debug)]
pub struct ReviewGate {
    slots: Arc<Semaphore>,
    /// Estimated decoded memory of reviews in progress, in KiB.
    memory_kib: Arc<Semaphore>,
    memory_kib_total: u32,
    max_review_memory: u64,
    capacity: usize,
    wait: Duration,
    body_timeout: Duration,
    max_body: usize,
}

impl ReviewGate {
    pub fn new(limits: &LimitArgs) -> Self {
        let capacity = limits.max_concurrent_reviews.max(1) as usize;
        let memory_kib_total = u32::try_from(limits.review_memory_budget.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            slots: Arc::new(Semaphore::new(capacity)),
            memory_kib: Arc::new(Semaphore::new(memory_kib_total as usize)),
            memory_kib_total,
            max_review_memory: limits.max_review_memory as u64,
            capacity,
            wait: limits.overload_wait,
            body_timeout: limits.body_read_timeout,
            max_body: limits.max_request_body,
        }
    }

    /// Reviews being processed right now.
    pub fn in_use(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }
}

/// Message of the 429 answer (also in docs/troubleshooting.md).
pub const OVERLOADED: &str = "secret-injector is overloaded: every review slot is busy; retry";

/// axum middleware: wait up to `overload_wait` for a slot, else 429 + `Retry-After: 1`; then
/// read the body within `body_read_timeout` and `max_request_body`.
pub async fn review_gate(State(gate): State<ReviewGate>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > gate.max_body as u64) {
        // Discard (streamed) what a client is still sending, up to twice the limit, so an
        // HTTP/1 client sees the 413 rather than a reset connection.
        discard_body(request.into_body(), 2 * gate.max_body, gate.body_timeout).await;
        return too_large(gate.max_body);
    }
    let deadline = tokio::time::Instant::now() + gate.wait;
    let acquire = gate.slots.clone().acquire_owned();
    let permit = match tokio::time::timeout(gate.wait, acquire).await {
        Ok(Ok(permit)) => permit,
        _ => {
            debug!(capacity = gate.capacity, "review refused: overloaded");
            // Read and discard the body (streamed, never held) so an HTTP/1 client still
            // writing it sees the answer instead of a reset connection.
            discard_body(request.into_body(), gate.max_body, gate.body_timeout).await;
            return overloaded();
        }
    };
    // Never read more than the body declared.
    let limit = declared.map_or(gate.max_body, |d| (d as usize).min(gate.max_body));
    let (parts, body) = request.into_parts();
    let bytes =
        match tokio::time::timeout(gate.body_timeout, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => return too_large(gate.max_body),
            Err(_) => {
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {:?}",
                        gate.body_timeout
                    ),
                )
                    .into_response()
            }
        };
    let estimate = decoded_estimate(&bytes);
    if estimate > gate.max_review_memory {
        debug!(estimate, "review refused: too complex");
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{TOO_COMPLEX}: about {} MiB once decoded, the limit is {} MiB (--max-review-memory)",
                estimate.div_ceil(1024 * 1024),
                gate.max_review_memory / (1024 * 1024)
            ),
        )
            .into_response();
    }
    let cost_kib = u32::try_from(estimate.div_ceil(1024).max(1))
        .unwrap_or(u32::MAX)
        .min(gate.memory_kib_total);
    let memory = match tokio::time::timeout_at(
        deadline,
        gate.memory_kib.clone().acquire_many_owned(cost_kib),
    )
    .await
    {
        Ok(Ok(memory)) => memory,
        _ => return overloaded(),
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    drop(memory);
    drop(permit);
    response
}

/// Start of the 413 answer for reviews built to amplify memory (docs/troubleshooting.md).
pub const TOO_COMPLEX: &str = "the AdmissionReview is too complex";

/// Fixed cost of one JSON object once decoded into typed Kubernetes structs and the generic
/// form the admission path also keeps (a `Container` alone is over a kilobyte).
const OBJECT_COST: u64 = 4096;
/// Fixed cost of one JSON string (a `String` plus its allocation, or a map entry).
const STRING_COST: u64 = 96;

/// Upper estimate of the memory a review takes once decoded: its size plus a fixed cost per
/// object and per string, counted in one pass without decoding.
///
/// Runs on every review before anything is decoded, so it looks at eight bytes at a time and
/// stops only at the three bytes that matter (`"`, `\`, `{`); the result is exactly that of a
/// byte-by-byte scan (the unit tests compare the two).
pub fn decoded_estimate(body: &[u8]) -> u64 {
    let mut scan = EstimateScan::default();
    let mut words = body.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let mut hits = bytes_equal(word, b'"') | bytes_equal(word, b'\\') | bytes_equal(word, b'{');
        while hits != 0 {
            let at = base + (hits.trailing_zeros() / 8) as usize;
            hits &= hits - 1;
            scan.step(at, body[at]);
        }
        base += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if matches!(b, b'"' | b'\\' | b'{') {
            scan.step(base + i, b);
        }
    }
    body.len() as u64 + scan.objects * OBJECT_COST + scan.strings * STRING_COST
}

/// State of [`decoded_estimate`] between two interesting bytes.
#[derive(Default)]
struct EstimateScan {
    objects: u64,
    strings: u64,
    in_string: bool,
    /// Bytes before this index are skipped: the one after a backslash inside a string.
    skip_to: usize,
}

impl EstimateScan {
    fn step(&mut self, at: usize, b: u8) {
        if at < self.skip_to {
            return;
        }
        match (self.in_string, b) {
            (true, b'\\') => self.skip_to = at + 2,
            (true, b'"') => self.in_string = false,
            (false, b'"') => {
                self.in_string = true;
                self.strings += 1;
            }
            (false, b'{') => self.objects += 1,
            _ => {}
        }
    }
}

/// The high bit of each byte of `word` that equals `byte`, exactly (no carry between bytes).
fn bytes_equal(word: u64, byte: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ (u64::from(byte) * 0x0101_0101_0101_0101);
    !(((x & LOW7) + LOW7) | x) & !LOW7
}

fn overloaded() -> Response {
    let mut response = (StatusCode::TOO_MANY_REQUESTS, OVERLOADED).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Read and drop up to `max` bytes of a body within `timeout`; nothing is kept.
async fn discard_body(body: Body, max: usize, timeout: Duration) {
    let mut frames = body.into_data_stream();
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = futures::StreamExt::next(&mut frames).await {
            seen += chunk.len();
            if seen > max {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, discard).await;
}

fn too_large(max: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {max} bytes (--max-request-body) or unreadable"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_rules() {
        let limits = LimitArgs {
            header_read_timeout: Duration::from_millis(20),
            idle_timeout: Duration::from_millis(40),
            ..LimitArgs::default()
        };
        let a = Arc::new(Activity::default());
        assert_eq!(a.check(&limits), Idle::Keep);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(a.check(&limits), Idle::NeverSpoke);
        let guard = a.start();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            a.check(&limits),
            Idle::Keep,
            "a request in flight is never idle"
        );
        drop(guard);
        assert_eq!(a.check(&limits), Idle::Keep);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(a.check(&limits), Idle::Idle);
    }
}

#[cfg(test)]
mod estimate_tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-by-byte scan `decoded_estimate` must agree with.
    fn reference_estimate(body: &[u8]) -> u64 {
        let (mut objects, mut strings) = (0u64, 0u64);
        let (mut in_string, mut escaped) = (false, false);
        for &b in body {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else if b == b'"' {
                in_string = true;
                strings += 1;
            } else if b == b'{' {
                objects += 1;
            }
        }
        body.len() as u64 + objects * OBJECT_COST + strings * STRING_COST
    }

    proptest! {
        #[test]
        fn word_scan_agrees_with_the_byte_scan(
            body in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(b'{'), Just(b'}'), Just(b'a'), Just(0xffu8), any::<u8>()],
                0..400,
            )
        ) {
            prop_assert_eq!(decoded_estimate(&body), reference_estimate(&body));
        }
    }

    #[test]
    fn word_scan_agrees_on_reviews_and_edges() {
        for body in [
            &br#"{"a":"x{y\"{","b":[1,2]}"#[..],
            br#"\"#,
            br#""\"#,
            br#""abc\"#,
            br#"{"k":"\\"}{"#,
            br#"{"aaaaaaa":"bbbbbbb\"ccccc{"}"#,
        ] {
            assert_eq!(decoded_estimate(body), reference_estimate(body), "{body:?}");
        }
        for fixture in ["pod-create-short-form.json", "pod-create-rich.json"] {
            let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
            let review = std::fs::read(path).unwrap();
            assert_eq!(decoded_estimate(&review), reference_estimate(&review));
        }
    }

    #[test]
    fn estimate_counts_objects_and_strings_outside_strings() {
        let plain = br#"{"a":"x{y\"{","b":[1,2]}"#;
        // One object, three strings; the braces and quote inside the string do not count.
        assert_eq!(
            decoded_estimate(plain),
            plain.len() as u64 + OBJECT_COST + 3 * STRING_COST
        );
        // Tiny objects cost far more than their bytes: this is what the cap is for.
        let hostile: Vec<u8> = std::iter::repeat_n(&b"{\"name\":\"\"},"[..], 1000)
            .flatten()
            .copied()
            .collect();
        assert!(decoded_estimate(&hostile) > 300 * hostile.len() as u64);
    }
}
