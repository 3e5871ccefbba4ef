//! The refresher end to end: the real binary (leader via the stand-in's Lease), real OpenBao,
//! managed Secrets created by admission, values rotated in OpenBao.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::start_webhook;
use test_rig::payments::*;
use test_rig::webhook::Webhook;

const FAST: [&str; 8] = [
    "--min-refresh-interval",
    "1s",
    "--rollout-debounce",
    "1s",
    "--lease-duration",
    "3s",
    "--store-check-interval",
    "1m",
];

fn annotations(interval: &str) -> Value {
    json!({
        "secret-injector.io/store": "vault-backend",
        "secret-injector.io/env.DB_USERNAME": "payments/db#username",
        "secret-injector.io/env.DB_PASSWORD": "payments/db#password",
        "secret-injector.io/refresh-interval": interval
    })
}

async fn admit(rig: &Rig, webhook: &Webhook, annotations: Value) {
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let (body, response) = webhook
        .mutate(&pod_review(
            "uid-refresh",
            Some((REPLICASET, &rs_uid)),
            SA,
            annotations,
        ))
        .await;
    assert_eq!(response["allowed"], true, "{body}");
}

fn secret(rig: &Rig, name: &str) -> Value {
    rig.standin
        .object("secrets", Some(NS), name)
        .expect("managed Secret")
}

fn password(rig: &Rig) -> String {
    secret_data(&secret(rig, "payments-api-injected"))["DB_PASSWORD"].clone()
}

fn restarted_at(rig: &Rig) -> Option<String> {
    rig.standin.object("deployments", Some(NS), DEPLOYMENT)?["spec"]["template"]["metadata"]
        ["annotations"]["secret-injector.io/restarted-at"]
        .as_str()
        .map(String::from)
}

async fn rotate(rig: &Rig, path: &str, password: &str) {
    rig.bao
        .kv_put(
            "secret",
            2,
            path,
            json!({"username": DB_USERNAME, "password": password}),
        )
        .await;
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_rotated_value_reaches_the_secret_and_rolls_the_deployment_once() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    admit(&rig, &webhook, annotations("2s")).await;
    assert_eq!(password(&rig), DB_PASSWORD);
    assert!(restarted_at(&rig).is_none());

    rotate(&rig, "payments/db", "rotated_SENTINEL_pw_2").await;
    // Within interval + jitter (+ debounce for the rollout).
    wait_for(
        "the new value in the Secret",
        Duration::from_secs(8),
        || password(&rig) == "rotated_SENTINEL_pw_2",
    )
    .await;
    wait_for("the rollout annotation", Duration::from_secs(5), || {
        restarted_at(&rig).is_some()
    })
    .await;
    // Several more intervals: no further rollout for that one change.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        rig.standin.count("patch", "deployments"),
        1,
        "{:?}",
        rig.standin.counts()
    );
    let events = rig.standin.objects("events.events.k8s.io");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "RolledOut" && e["regarding"]["name"] == DEPLOYMENT),
        "{events:?}"
    );
    assert_no_leak(
        "events",
        &serde_json::to_string(&events).unwrap(),
        &["rotated_SENTINEL_pw_2", DB_PASSWORD],
    );
    assert_no_leak(
        "webhook log",
        &webhook.logs(),
        &["rotated_SENTINEL_pw_2", DB_PASSWORD, DB_USERNAME],
    );
    let metrics = webhook.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"secret_injector_rollouts_total{kind="deployment"}"#
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn two_secrets_of_one_workload_rotated_together_roll_it_once() {
    let rig = Rig::start().await;
    rig.bao
        .kv_put(
            "secret",
            2,
            "payments/api",
            json!({"token": "api_SENTINEL_1"}),
        )
        .await;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    let items = r#"
- name: payments-db
  storeRef: {name: vault-backend}
  refreshInterval: 3s
  data: [{secretKey: DB_PASSWORD, remoteRef: {key: payments/db, property: password}}]
- name: payments-token
  storeRef: {name: vault-backend}
  refreshInterval: 3s
  data: [{secretKey: API_TOKEN, remoteRef: {key: payments/api, property: token}}]
"#;
    admit(
        &rig,
        &webhook,
        json!({"secret-injector.io/external-secrets": items}),
    )
    .await;
    rotate(&rig, "payments/db", "rotated_SENTINEL_db").await;
    rig.bao
        .kv_put(
            "secret",
            2,
            "payments/api",
            json!({"token": "api_SENTINEL_2"}),
        )
        .await;
    wait_for("both Secrets updated", Duration::from_secs(10), || {
        secret_data(&secret(&rig, "payments-db"))["DB_PASSWORD"] == "rotated_SENTINEL_db"
            && secret_data(&secret(&rig, "payments-token"))["API_TOKEN"] == "api_SENTINEL_2"
    })
    .await;
    wait_for("the rollout", Duration::from_secs(5), || {
        restarted_at(&rig).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        rig.standin.count("patch", "deployments"),
        1,
        "one rollout for both Secrets"
    );
}

#[tokio::test]
async fn no_upstream_change_means_no_writes_at_all() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    admit(&rig, &webhook, annotations("1s")).await;
    let before = secret(&rig, "payments-api-injected");
    rig.standin.reset_counts();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let metrics = webhook.metrics().await;
    assert!(
        metric(
            &metrics,
            r#"secret_injector_refreshes_total{result="unchanged"}"#
        ) >= 3.0,
        "the Secret was refreshed: {metrics}"
    );
    assert_eq!(
        rig.standin.writes("secrets"),
        0,
        "{:?}",
        rig.standin.counts()
    );
    assert_eq!(rig.standin.writes("deployments"), 0);
    assert_eq!(
        secret(&rig, "payments-api-injected")["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn an_outage_keeps_the_last_good_value_and_backs_off() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    admit(&rig, &webhook, annotations("1s")).await;
    let before = secret(&rig, "payments-api-injected");
    // Let the refresher settle into its steady schedule first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = webhook.metrics().await;
    let calls_before = metric(
        &base,
        r#"secret_injector_backend_requests_total{provider="vault",operation="read",result="ok"}"#,
    ) + metric(
        &base,
        r#"secret_injector_backend_requests_total{provider="vault",operation="read",result="error"}"#,
    );

    rig.bao.pause();
    let outage = Duration::from_secs(10);
    tokio::time::sleep(outage).await;
    let after = secret(&rig, "payments-api-injected");
    assert_eq!(after["data"], before["data"], "the Secret keeps its bytes");
    assert_eq!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "and is not written at all"
    );
    let events = rig.standin.objects("events.events.k8s.io");
    let warning = events
        .iter()
        .find(|e| e["reason"] == "RefreshFailed")
        .expect("a Warning Event");
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["regarding"]["kind"], "Deployment");
    let metrics = webhook.metrics().await;
    let errors = metric(
        &metrics,
        r#"secret_injector_refreshes_total{result="error"}"#,
    );
    assert!(errors >= 1.0, "{metrics}");
    let calls = metric(
        &metrics,
        r#"secret_injector_backend_requests_total{provider="vault",operation="read",result="ok"}"#,
    ) + metric(
        &metrics,
        r#"secret_injector_backend_requests_total{provider="vault",operation="read",result="error"}"#,
    ) - calls_before;
    // The normal schedule is one read per second; during the outage, never more.
    assert!(
        calls <= outage.as_secs_f64() + 1.0,
        "{calls} backend reads in {outage:?} at a 1s interval"
    );

    rig.bao.resume();
    rotate(&rig, "payments/db", "after_outage_SENTINEL").await;
    wait_for(
        "convergence after the outage",
        Duration::from_secs(15),
        || password(&rig) == "after_outage_SENTINEL",
    )
    .await;
}

#[tokio::test]
async fn one_leader_refreshes_and_a_successor_takes_over() {
    let rig = Rig::start().await;
    let mut first = start_webhook(&rig.standin, &FAST).await;
    let holder = || {
        rig.standin
            .object("leases", Some("secret-injector"), "secret-injector-leader")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    };
    wait_for("a leader", Duration::from_secs(10), || holder().is_some()).await;
    let leader = holder().unwrap();
    let second = start_webhook(&rig.standin, &FAST).await;
    admit(&rig, &second, annotations("1s")).await;

    rotate(&rig, "payments/db", "ha_SENTINEL_1").await;
    wait_for("the first rotation", Duration::from_secs(8), || {
        password(&rig) == "ha_SENTINEL_1"
    })
    .await;
    wait_for("its rollout", Duration::from_secs(5), || {
        restarted_at(&rig).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rig.standin.count("patch", "deployments"),
        1,
        "two replicas, one rollout"
    );

    first.stop().await;
    wait_for("a new leader", Duration::from_secs(8), || {
        holder().is_some_and(|h| h != leader)
    })
    .await;
    rotate(&rig, "payments/db", "ha_SENTINEL_2").await;
    wait_for("the successor refreshes", Duration::from_secs(10), || {
        password(&rig) == "ha_SENTINEL_2"
    })
    .await;
    drop(second);
}

#[tokio::test]
async fn restarts_never_roll_and_interval_zero_never_refreshes() {
    let rig = Rig::start().await;
    let mut webhook = start_webhook(&rig.standin, &FAST).await;
    admit(&rig, &webhook, annotations("1s")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    webhook.stop().await;
    rig.standin.reset_counts();
    let restarted = start_webhook(&rig.standin, &FAST).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        metric(
            &restarted.metrics().await,
            r#"secret_injector_refreshes_total{result="unchanged"}"#
        ) >= 1.0
    );
    assert_eq!(
        rig.standin.writes("deployments"),
        0,
        "a restart must not roll anything"
    );
    assert_eq!(rig.standin.writes("secrets"), 0);
    drop(restarted);

    // refreshInterval 0: fetched once at admission, never again.
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    admit(&rig, &webhook, annotations("0")).await;
    rotate(&rig, "payments/db", "never_SENTINEL").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(password(&rig), DB_PASSWORD);
    let metrics = webhook.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"secret_injector_refreshes_total{result="unchanged"}"#
        ),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"secret_injector_refreshes_total{result="updated"}"#
        ),
        0.0
    );
}

#[tokio::test]
async fn force_sync_on_the_secret_or_the_workload_refreshes_now() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    admit(&rig, &webhook, annotations("1h")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    rotate(&rig, "payments/db", "forced_SENTINEL_1").await;
    let mut s = secret(&rig, "payments-api-injected");
    s["metadata"]["annotations"]["secret-injector.io/force-sync"] = json!("1");
    rig.standin.seed(s);
    wait_for("force-sync on the Secret", Duration::from_secs(6), || {
        password(&rig) == "forced_SENTINEL_1"
    })
    .await;

    rotate(&rig, "payments/db", "forced_SENTINEL_2").await;
    let mut d = rig
        .standin
        .object("deployments", Some(NS), DEPLOYMENT)
        .unwrap();
    d["metadata"]["annotations"] = json!({"secret-injector.io/force-sync": "2026-11-23T16:00:00Z"});
    rig.standin.seed(d);
    wait_for(
        "force-sync on the Deployment",
        Duration::from_secs(6),
        || password(&rig) == "forced_SENTINEL_2",
    )
    .await;
}

#[tokio::test]
async fn a_secret_whose_owner_is_gone_is_deleted() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    admit(&rig, &webhook, annotations("1s")).await;
    rig.standin.remove("deployments", Some(NS), DEPLOYMENT);
    wait_for("the orphan to be deleted", Duration::from_secs(8), || {
        rig.standin
            .object("secrets", Some(NS), "payments-api-injected")
            .is_none()
    })
    .await;
    let metrics = webhook.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"secret_injector_refreshes_total{result="orphaned"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn a_forged_managed_secret_outside_opted_in_namespaces_is_ignored() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    // A namespace that never opted in, with its own ServiceAccount and store, and a Secret that
    // merely *looks* managed (anyone who can write Secrets there could create it).
    rig.standin
        .seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sandbox"}}));
    rig.standin.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder", "namespace": "sandbox"}}));
    let mut store = rig
        .standin
        .object("secretstores", Some(NS), "vault-backend")
        .unwrap();
    store["metadata"] = json!({"name": "vault-backend", "namespace": "sandbox"});
    rig.standin.seed(store);
    rig.standin.seed(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "forged", "namespace": "sandbox",
            "labels": {"app.kubernetes.io/managed-by": "secret-injector"},
            "annotations": {
                "secret-injector.io/source": r#"{"storeRef":{"kind":"SecretStore","name":"vault-backend"},"data":[{"secretKey":"P","remoteRef":{"key":"payments/db","property":"password"}}],"extract":[]}"#,
                "secret-injector.io/service-account": "builder",
                "secret-injector.io/refresh-interval": "1s",
                "secret-injector.io/owner": "Pod/nothing",
                "secret-injector.io/rollout": "none"
            }},
        "data": {}
    }));
    let skipped = || async {
        metric(
            &webhook.metrics().await,
            r#"secret_injector_refreshes_total{result="skipped"}"#,
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while skipped().await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the forged Secret was never considered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        rig.standin
            .token_requests()
            .iter()
            .all(|t| t.namespace != "sandbox"),
        "no token may be minted for a namespace that did not opt in"
    );
    assert_eq!(
        rig.standin
            .object("secrets", Some("sandbox"), "forged")
            .unwrap()["data"],
        json!({})
    );
}

#[tokio::test]
async fn changing_the_refresh_interval_reaches_the_existing_secret() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    admit(&rig, &webhook, annotations("1h")).await;
    assert_eq!(
        secret(&rig, "payments-api-injected")["metadata"]["annotations"]
            ["secret-injector.io/refresh-interval"],
        "1h"
    );
    // The app team shortens the interval; the next pod's admission records it.
    admit(&rig, &webhook, annotations("2s")).await;
    assert_eq!(
        secret(&rig, "payments-api-injected")["metadata"]["annotations"]
            ["secret-injector.io/refresh-interval"],
        "2s"
    );
    rotate(&rig, "payments/db", "interval_SENTINEL").await;
    wait_for(
        "a refresh on the new interval",
        Duration::from_secs(8),
        || password(&rig) == "interval_SENTINEL",
    )
    .await;
}
