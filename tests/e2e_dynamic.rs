//! Dynamic database credentials end to end: the real binary, the stand-in API, real OpenBao
//! and a real PostgreSQL (password auth, so a login proves the credentials).

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::start_webhook;
use test_rig::dynamic::*;
use test_rig::payments::*;

#[tokio::test]
async fn one_issuance_per_workload_whose_credentials_log_in() {
    let db = DbRig::start(3600, 7200, 1200).await;
    let rig = &db.rig;
    rig.seed_aws_store("aws-store", "http://127.0.0.1:9", None);
    let mut args = FAST.to_vec();
    args.extend(["--allowed-aws-endpoints", "http://127.0.0.1:*"]);
    let webhook = start_webhook(&rig.standin, &args).await;

    // Dynamic secrets come from Vault stores only: denied naming the annotation.
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let (_, denied) = webhook
        .mutate(&pod_review(
            "uid-aws",
            Some((REPLICASET, &rs_uid)),
            SA,
            json!({"secret-injector.io/store": "aws-store", "secret-injector.io/dynamic": CREDS}),
        ))
        .await;
    assert_eq!(denied["allowed"], false, "{denied}");
    let msg = denied["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("secret-injector.io/dynamic") && msg.contains("Vault"),
        "{msg}"
    );

    let response = admit(rig, &webhook, "uid-1", REPLICASET, short_form()).await;
    let name = "payments-api-injected";
    let c = creds(rig, name);
    assert!(
        db.login(&c).await.is_ok(),
        "issued credentials log into PostgreSQL"
    );
    let s = secret(rig, name);
    let ann = &s["metadata"]["annotations"];
    assert_eq!(s["type"], "Opaque");
    assert!(lease_id(rig, name).starts_with("database/creds/payments-rw/"));
    assert_eq!(ann["secret-injector.io/lease-holder"], "orphan-token");
    assert_eq!(ann["secret-injector.io/lease-renewable"], "true");
    for k in [
        "lease-issued",
        "lease-ttl",
        "lease-expires",
        "lease-next-action",
    ] {
        assert!(
            ann[format!("secret-injector.io/{k}")].is_string(),
            "{k}: {ann}"
        );
    }
    // The fields reach the containers through envFrom.
    let patch = serde_json::to_string(&decoded_patch(&response).unwrap()).unwrap();
    assert!(patch.contains("envFrom") && patch.contains(name), "{patch}");
    assert_eq!(db.leases().await.len(), 1);

    // A second pod of the warm workload: nothing issued.
    admit(rig, &webhook, "uid-2", REPLICASET, short_form()).await;
    assert_eq!(creds(rig, name), c);
    assert_eq!(db.leases().await.len(), 1, "a new pod issues nothing");

    // Concurrent cold pods of another workload of the same identity: one issuance, its own.
    rig.seed_deployment("ledger", "ledger-5d8f");
    let reviews = (0..6).map(|i| {
        let webhook = &webhook;
        async move {
            admit(
                rig,
                webhook,
                &format!("uid-l{i}"),
                "ledger-5d8f",
                short_form(),
            )
            .await
        }
    });
    futures::future::join_all(reviews).await;
    let ledger = creds(rig, "ledger-injected");
    assert_ne!(ledger, c, "never another workload's credentials");
    assert!(db.login(&ledger).await.is_ok());
    assert_eq!(db.leases().await.len(), 2, "one lease per workload");

    // The leader counts the leases its Secrets hold.
    let mut held = 0.0;
    for _ in 0..50 {
        held = metric(&webhook.metrics().await, "secret_injector_leases_held");
        if held == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held, 2.0, "leases held");

    // Nothing secret anywhere it must not be.
    let sentinels = [c.password.as_str(), ledger.password.as_str()];
    let metrics = webhook.metrics().await;
    assert!(
        metrics.contains(
            "secret_injector_lease_operations_total{operation=\"issue\",result=\"ok\"} 2"
        ),
        "{metrics}"
    );
    assert_no_leak("metrics", &metrics, &sentinels);
    assert_no_leak("patch", &patch, &sentinels);
    assert_no_leak("webhook log", &webhook.logs(), &sentinels);
    // No Vault token (login or lease holder) in the log: nothing shaped like one.
    let sample = must(
        rig,
        reqwest::Method::POST,
        "auth/token/create",
        json!({"ttl": "1m"}),
    )
    .await["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let prefix = &sample[..sample.find('.').map_or(0, |i| i + 1)];
    assert!(!prefix.is_empty(), "token format: {sample}");
    let logs = webhook.logs();
    let tokenish = logs.match_indices(prefix).any(|(i, _)| {
        logs[i + prefix.len()..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .count()
            >= 20
    });
    assert!(!tokenish, "a Vault token in the webhook log");
    assert_no_leak(
        "annotations",
        &s["metadata"].to_string(),
        &[c.password.as_str(), c.username.as_str()],
    );
    assert_no_leak(
        "events",
        &serde_json::to_string(&rig.standin.objects("events.events.k8s.io")).unwrap(),
        &sentinels,
    );
}

#[tokio::test]
async fn credentials_outlive_a_short_login_token() {
    // Login tokens live 3 s; the credentials 1 h.
    let db = DbRig::start(3600, 7200, 3).await;
    let rig = &db.rig;
    // A second role without create-orphan: the explicit fallback.
    kubernetes_role(
        rig,
        "payments-no-orphan",
        &["payments-dynamic-no-orphan"],
        3,
    )
    .await;
    rig.seed_store(
        "vault-no-orphan",
        json!({"auth": {"kubernetes": {"role": "payments-no-orphan"}}}),
    );
    let webhook = start_webhook(&rig.standin, &FAST).await;
    admit(rig, &webhook, "uid-1", REPLICASET, short_form()).await;
    let c = creds(rig, "payments-api-injected");
    assert!(db.login(&c).await.is_ok());

    rig.seed_deployment("ledger", "ledger-5d8f");
    let response = admit(
        rig,
        &webhook,
        "uid-2",
        "ledger-5d8f",
        json!({"secret-injector.io/store": "vault-no-orphan", "secret-injector.io/dynamic": CREDS}),
    )
    .await;
    assert!(
        response["warnings"]
            .to_string()
            .contains("auth/token/create-orphan"),
        "the fallback is explicit: {response}"
    );
    assert_eq!(
        annotation(rig, "ledger-injected", "secret-injector.io/lease-holder").as_deref(),
        Some("login-token")
    );
    // Its recorded expiry is the login token's, not the lease's hour.
    let expires: k8s_openapi::jiff::Timestamp =
        annotation(rig, "ledger-injected", "secret-injector.io/lease-expires")
            .unwrap()
            .parse()
            .unwrap();
    let left = expires.duration_since(k8s_openapi::jiff::Timestamp::now());
    assert!(
        left.as_secs() <= 5,
        "fallback expiry follows the login token: {left:?}"
    );

    // Well past the login token's TTL (and OpenBao's revocation of its leases).
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(
        db.login(&c).await.is_ok(),
        "credentials issued with the lease-holder token outlive the login token"
    );
    assert!(
        db.lease_exists(&lease_id(rig, "payments-api-injected"))
            .await
    );
}

#[tokio::test]
async fn reissued_before_max_ttl_rolled_once_and_the_old_lease_revoked_after_grace() {
    // Leases of 10 s renewable up to 40 s: renewed, then re-issued at about 28 s.
    let db = DbRig::start(10, 40, 1200).await;
    let rig = &db.rig;
    let mut args = FAST.to_vec();
    args.extend(["--lease-revoke-grace", "3s"]);
    let webhook = start_webhook(&rig.standin, &args).await;
    let t0 = Instant::now();
    admit(rig, &webhook, "uid-1", REPLICASET, short_form()).await;
    let name = "payments-api-injected";
    let first = creds(rig, name);
    let first_lease = lease_id(rig, name);

    // Renewed first (same credentials), re-issued before the 40 s max TTL.
    wait_for("the re-issue", Duration::from_secs(38), || {
        creds(rig, name) != first
    })
    .await;
    let reissued_at = t0.elapsed();
    assert!(
        reissued_at > Duration::from_secs(12),
        "renewed before re-issuing: {reissued_at:?}"
    );
    let second = creds(rig, name);
    assert!(db.login(&second).await.is_ok(), "new credentials log in");
    assert!(
        db.login(&first).await.is_ok(),
        "old pods keep working during the grace period"
    );
    wait_for("the rollout", Duration::from_secs(5), || {
        restarted_at(rig, DEPLOYMENT).is_some()
    })
    .await;

    // After the grace period: the old user is gone, well before its own max TTL.
    db.wait_refused(&first, Duration::from_secs(8)).await;
    assert!(
        t0.elapsed() < Duration::from_secs(39),
        "revoked, not expired: {:?}",
        t0.elapsed()
    );
    assert!(
        !db.lease_exists(&first_lease).await,
        "old lease gone from OpenBao"
    );
    assert!(db.login(&second).await.is_ok());
    let metrics = webhook.metrics().await;
    assert_eq!(
        rig.standin.count("patch", "deployments"),
        1,
        "rolled exactly once"
    );
    assert!(
        metric(
            &metrics,
            r#"secret_injector_lease_operations_total{operation="renew",result="ok"}"#
        ) >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"secret_injector_lease_operations_total{operation="reissue",result="ok"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_no_leak(
        "webhook log",
        &webhook.logs(),
        &[first.password.as_str(), second.password.as_str()],
    );
}

#[tokio::test]
async fn force_sync_reissues_and_deleting_the_workload_revokes_every_lease() {
    let db = DbRig::start(3600, 7200, 1200).await;
    let rig = &db.rig;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    admit(rig, &webhook, "uid-1", REPLICASET, short_form()).await;
    let name = "payments-api-injected";
    let c = creds(rig, name);
    let lease = lease_id(rig, name);
    // Let the refresher (leader) pick the Secret up.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // force-sync on an issued Secret: new credentials now; the old lease retires (10 min grace).
    let mut s = secret(rig, name);
    s["metadata"]["annotations"]["secret-injector.io/force-sync"] = json!("1");
    rig.standin.seed(s);
    wait_for("the forced re-issue", Duration::from_secs(8), || {
        creds(rig, name) != c
    })
    .await;
    let renewed = creds(rig, name);
    assert!(db.login(&renewed).await.is_ok());
    assert!(
        db.login(&c).await.is_ok(),
        "the old lease is in its grace period"
    );
    assert!(annotation(rig, name, "secret-injector.io/lease-retiring")
        .unwrap()
        .contains(&lease));
    assert_eq!(db.leases().await.len(), 2);

    rig.standin.remove("replicasets", Some(NS), REPLICASET);
    rig.standin.remove("deployments", Some(NS), DEPLOYMENT);
    wait_for("the Secret collected", Duration::from_secs(15), || {
        rig.standin.object("secrets", Some(NS), name).is_none()
    })
    .await;
    // Both the lease in use and the retiring one are revoked.
    db.wait_refused(&c, Duration::from_secs(10)).await;
    db.wait_refused(&renewed, Duration::from_secs(10)).await;
    assert!(!db.lease_exists(&lease).await, "lease revoked");
    assert!(db.leases().await.is_empty());
}

#[tokio::test]
async fn openbao_paused_across_a_renewal_keeps_the_credentials_and_converges_without_a_rollout() {
    // 30 s leases (renewable to 10 min): the first renewal is due at about 19 s.
    let db = DbRig::start(30, 600, 1200).await;
    let rig = &db.rig;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    let t0 = Instant::now();
    admit(rig, &webhook, "uid-1", REPLICASET, short_form()).await;
    let name = "payments-api-injected";
    let c = creds(rig, name);
    let lease = lease_id(rig, name);
    let first_ttl = annotation(rig, name, "secret-injector.io/lease-renewed");
    assert!(first_ttl.is_none());

    tokio::time::sleep(Duration::from_secs(16).saturating_sub(t0.elapsed())).await;
    rig.bao.pause();
    let warned = || {
        rig.standin.objects("events.events.k8s.io").iter().any(|e| {
            e["type"] == "Warning"
                && (e["reason"] == "LeaseRenewalFailed" || e["reason"] == "LeaseExpiring")
        })
    };
    let paused = Instant::now();
    while !warned() && paused.elapsed() < Duration::from_secs(9) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got_warning = warned();
    rig.bao.resume();
    assert!(got_warning, "a Warning Event while OpenBao is down");
    assert!(
        db.login(&c).await.is_ok(),
        "credentials kept while OpenBao is down"
    );

    wait_for(
        "the renewal after OpenBao is back",
        Duration::from_secs(20),
        || annotation(rig, name, "secret-injector.io/lease-renewed").is_some(),
    )
    .await;
    assert_eq!(lease_id(rig, name), lease, "same lease, renewed");
    assert_eq!(creds(rig, name), c);
    assert!(db.login(&c).await.is_ok());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.standin.count("patch", "deployments"), 0, "no rollout");
    let metrics = webhook.metrics().await;
    assert!(
        metric(
            &metrics,
            r#"secret_injector_lease_operations_total{operation="renew",result="error"}"#
        ) >= 1.0,
        "{metrics}"
    );
    let events = serde_json::to_string(&rig.standin.objects("events.events.k8s.io")).unwrap();
    assert_no_leak("events", &events, &[c.password.as_str()]);
}

#[tokio::test]
async fn two_replicas_racing_on_a_cold_workload_leave_one_lease() {
    let db = DbRig::start(3600, 7200, 1200).await;
    let rig = &db.rig;
    let (a, b) = tokio::join!(
        start_webhook(&rig.standin, &FAST),
        start_webhook(&rig.standin, &FAST)
    );
    let reviews = (0..6).map(|i| {
        let webhook = if i % 2 == 0 { &a } else { &b };
        async move { admit(rig, webhook, &format!("uid-{i}"), REPLICASET, short_form()).await }
    });
    futures::future::join_all(reviews).await;
    let name = "payments-api-injected";
    let kept = lease_id(rig, name);
    // A losing replica gives its unused lease back: only the Secret's lease remains.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leases = db.leases().await;
        if leases.len() == 1 {
            assert!(kept.ends_with(&leases[0]), "{kept} vs {leases:?}");
            break;
        }
        assert!(Instant::now() < deadline, "leases left: {leases:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(db.login(&creds(rig, name)).await.is_ok());
}
