//! The one piece of the test rig that needs this package itself: starting the real
//! `secret-injector` binary, whose path Cargo gives only to this package's test targets, with a
//! serving certificate from the webhook's own generator. Everything else is in the
//! `k8s-standin` and `test-rig` crates under tests/.

pub mod vault_proxy;

use std::path::Path;

use k8s_standin::StandIn;
use test_rig::webhook::{Tls, Webhook};

/// `secret-injector serve` against `standin`, with `extra_args`; returns once it is ready.
pub async fn start_webhook(standin: &StandIn, extra_args: &[&str]) -> Webhook {
    let webhook = spawn_webhook(standin, extra_args);
    webhook.wait_ready().await;
    webhook
}

/// As [`start_webhook`], without waiting for readiness.
#[allow(dead_code)]
pub fn spawn_webhook(standin: &StandIn, extra_args: &[&str]) -> Webhook {
    let generated =
        secret_injector::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1)
            .unwrap();
    let tls = Tls {
        ca_pem: generated.ca_pem,
        cert_pem: generated.cert_pem,
        key_pem: generated.key_pem,
    };
    let binary = Path::new(env!("CARGO_BIN_EXE_secret-injector"));
    Webhook::spawn(binary, tls, standin, extra_args)
}
