//! Cold admissions, counted on the wire: the real binary, the Kubernetes API stand-in (its
//! TokenRequest records and request counters) and a real OpenBao behind a counting proxy.
//! Counts, not timings.

mod support;

use serde_json::{json, Value};
use support::start_webhook;
use support::vault_proxy::{Kind, Proxy};
use test_rig::payments::*;

fn counted_store_annotations() -> Value {
    json!({
        "secret-injector.io/store": "vault-counted",
        "secret-injector.io/env.DB_USERNAME": "payments/db#username",
        "secret-injector.io/env.DB_PASSWORD": "payments/db#password"
    })
}

#[tokio::test]
async fn fifty_concurrent_cold_admissions_of_one_identity_make_one_token_request_login_read_and_write(
) {
    let rig = Rig::start().await;
    let proxy = Proxy::start(&rig.bao.addr()).await;
    rig.seed_store("vault-counted", json!({"server": proxy.url}));
    // The concurrency cap is not what this test is about: let all 50 in at once.
    let webhook = start_webhook(&rig.standin, &["--max-concurrent-reviews", "64"]).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    rig.standin.reset_counts();
    rig.standin.clear_token_records();

    let reviews: Vec<Value> = (0..50)
        .map(|i| {
            pod_review(
                &format!("uid-cold-{i}"),
                Some((REPLICASET, &rs_uid)),
                SA,
                counted_store_annotations(),
            )
        })
        .collect();
    let answers = futures::future::join_all(reviews.iter().map(|r| webhook.mutate(r))).await;
    for (i, (body, response)) in answers.iter().enumerate() {
        assert_eq!(response["uid"], format!("uid-cold-{i}"));
        assert_eq!(response["allowed"], true, "{body}");
        assert!(response.get("patch").is_some(), "{body}");
    }

    let token_requests = rig.standin.token_requests();
    assert_eq!(token_requests.len(), 1, "{token_requests:?}");
    assert_eq!(proxy.count(Kind::Login), 1, "Vault logins");
    assert_eq!(proxy.count(Kind::Read), 1, "Vault reads");
    assert_eq!(rig.standin.count("create", "secrets"), 1, "Secret creates");
    let secret = rig
        .standin
        .object("secrets", Some(NS), "payments-api-injected")
        .expect("managed Secret");
    assert_eq!(secret_data(&secret)["DB_PASSWORD"], DB_PASSWORD);

    // The stage histogram saw the one login, the one read and the one write.
    let metrics = webhook.metrics().await;
    for stage in ["login", "read", "write"] {
        let line = format!("secret_injector_admission_stage_seconds_count{{stage=\"{stage}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
}
