//! A counting HTTP proxy in front of the real OpenBao: every request the webhook makes to
//! Vault passes through it and is recorded (time, kind), so logins and reads are counted on
//! the wire, independently of the webhook's own metrics. Shared by the tests (tests/support)
//! and the bench (benches/admission/main.rs includes this file).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::Router;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Login,
    Read,
    Other,
}

#[derive(Clone)]
pub struct Proxy {
    pub url: String,
    log: Arc<Mutex<Vec<(Instant, Kind)>>>,
}

#[derive(Clone)]
struct Upstream {
    base: String,
    http: reqwest::Client,
    log: Arc<Mutex<Vec<(Instant, Kind)>>>,
}

fn kind_of(path: &str) -> Kind {
    if path.starts_with("/v1/auth/") && path.ends_with("/login") {
        Kind::Login
    } else if path.starts_with("/v1/secret/data/") || path.starts_with("/v1/kv1/") {
        Kind::Read
    } else {
        Kind::Other
    }
}

async fn forward(State(up): State<Upstream>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    up.log
        .lock()
        .unwrap()
        .push((Instant::now(), kind_of(parts.uri.path())));
    let body: Bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let mut out = up.http.request(parts.method, format!("{}{path}", up.base));
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            out = out.header(name, value);
        }
    }
    match out.body(body).send().await {
        Ok(r) => {
            let mut builder = Response::builder().status(r.status().as_u16());
            for (name, value) in r.headers() {
                if name != "content-length" && name != "transfer-encoding" {
                    builder = builder.header(name, value);
                }
            }
            let bytes = r.bytes().await.unwrap_or_default();
            builder.body(Body::from(bytes)).unwrap()
        }
        Err(_) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .unwrap(),
    }
}

impl Proxy {
    /// Listen on a loopback port and forward to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> Proxy {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Upstream {
            base: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            log: log.clone(),
        };
        let app = Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Proxy { url, log }
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, k)| *k == kind)
            .count()
    }

    /// Times of the requests of `kind` at or after `since`.
    pub fn times(&self, kind: Kind, since: Instant) -> Vec<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, k)| *k == kind && *t >= since)
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn reset(&self) {
        self.log.lock().unwrap().clear();
    }
}
