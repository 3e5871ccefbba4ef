//! End to end for AWS Secrets Manager: the real binary over TLS, the Kubernetes API stand-in,
//! and a real moto server serving both STS and Secrets Manager on one loopback port. The
//! webhook mints the pod's ServiceAccount token (audience sts.amazonaws.com), calls
//! AssumeRoleWithWebIdentity, and reads with the temporary credentials it gets back.
//! The AWS half of the payments scenario (store, role, values, request counters, the log
//! check) is `test_rig::aws`.

mod support;

use serde_json::{json, Value};
use support::start_webhook;
use test_rig::aws::*;
use test_rig::moto::Moto;
use test_rig::payments::*;
use test_rig::webhook::Webhook;

async fn webhook(rig: &Rig) -> Webhook {
    start_webhook(
        &rig.standin,
        &["--allowed-aws-endpoints", "http://127.0.0.1:*"],
    )
    .await
}

#[tokio::test]
async fn irsa_pod_gets_aws_values_as_its_own_service_account() {
    let AwsRig { rig, moto: _moto } = aws_rig().await;
    let webhook = webhook(&rig).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let annotations = json!({
        "secret-injector.io/store": STORE,
        "secret-injector.io/env.FEED_API_KEY": "payments/fraud-feed#api_key",
        "secret-injector.io/env.FEED_ENDPOINT": "payments/fraud-feed#endpoint"
    });
    let (body, response) = webhook
        .mutate(&pod_review(
            "uid-aws-1",
            Some((REPLICASET, &rs_uid)),
            SA,
            annotations,
        ))
        .await;
    assert_eq!(response["uid"], "uid-aws-1");
    assert_eq!(response["allowed"], true, "{body}");
    let patch = decoded_patch(&response).unwrap().to_string();
    assert!(patch.contains(r#""name":"FEED_API_KEY""#), "{patch}");

    let secret = rig
        .standin
        .object("secrets", Some(NS), "payments-api-injected")
        .expect("managed Secret");
    let data = secret_data(&secret);
    assert_eq!(data.len(), 2);
    assert_eq!(data["FEED_API_KEY"], AWS_FEED_KEY);
    assert_eq!(data["FEED_ENDPOINT"], AWS_FEED_ENDPOINT);
    assert_eq!(
        secret["metadata"]["annotations"]["secret-injector.io/service-account"],
        SA
    );

    // Exactly one TokenRequest: for the pod's own ServiceAccount, audience sts.amazonaws.com.
    let requests = rig.standin.token_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        (
            requests[0].namespace.as_str(),
            requests[0].service_account.as_str(),
            requests[0].audiences.clone()
        ),
        (NS, SA, vec!["sts.amazonaws.com".to_string()])
    );
    assert_eq!(requests[0].expiration_seconds, 600);
    // The role came from the ServiceAccount's annotation, read with a GET of that account.
    assert_eq!(rig.standin.count("get", "serviceaccounts"), 1);

    let metrics = webhook.metrics().await;
    assert_eq!(
        metric(&metrics, "assume_role_with_web_identity", "ok"),
        1,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "get_secret_value", "ok"), 1, "{metrics}");
    assert_eq!(
        metric(&metrics, "batch_get_secret_value", "ok"),
        0,
        "{metrics}"
    );

    // Another workload of the same ServiceAccount: the cached credentials serve it (no new
    // TokenRequest, no new AssumeRoleWithWebIdentity) …
    rig.seed_deployment("ledger", "ledger-5d4c3");
    let ledger_rs = rig.replicaset_uid("ledger-5d4c3");
    let (_, second) = webhook
        .mutate(&pod_review(
            "uid-aws-2",
            Some(("ledger-5d4c3", &ledger_rs)),
            SA,
            json!({"secret-injector.io/store": STORE, "secret-injector.io/env.LEDGER_TOKEN": "payments/ledger-token"}),
        ))
        .await;
    assert_eq!(second["allowed"], true, "{second}");
    assert_eq!(rig.standin.token_requests().len(), 1);
    let metrics = webhook.metrics().await;
    assert_eq!(
        metric(&metrics, "assume_role_with_web_identity", "ok"),
        1,
        "{metrics}"
    );
    assert_eq!(
        secret_data(
            &rig.standin
                .object("secrets", Some(NS), "ledger-injected")
                .unwrap()
        )["LEDGER_TOKEN"],
        LEDGER_TOKEN
    );

    // … while another ServiceAccount never shares them: its own token, its own role.
    rig.seed_service_account("fraud-worker", Some(&Moto::role_arn("fraud-worker")));
    rig.seed_deployment("fraud-worker", "fraud-worker-66b5d");
    let fraud_rs = rig.replicaset_uid("fraud-worker-66b5d");
    let (_, third) = webhook
        .mutate(&pod_review(
            "uid-aws-3",
            Some(("fraud-worker-66b5d", &fraud_rs)),
            "fraud-worker",
            json!({"secret-injector.io/store": STORE, "secret-injector.io/env.LEDGER_TOKEN": "payments/ledger-token"}),
        ))
        .await;
    assert_eq!(third["allowed"], true, "{third}");
    let requests = rig.standin.token_requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1].service_account, "fraud-worker");
    assert_eq!(requests[1].audiences, vec!["sts.amazonaws.com".to_string()]);
    let metrics = webhook.metrics().await;
    assert_eq!(
        metric(&metrics, "assume_role_with_web_identity", "ok"),
        2,
        "{metrics}"
    );

    assert_no_leak("response", &body, &SENTINELS);
    assert_no_leak("patch", &patch, &SENTINELS);
    assert_no_leak(
        "secret annotations",
        &secret["metadata"].to_string(),
        &SENTINELS,
    );
    assert_clean_log(&webhook);
}

#[tokio::test]
async fn payments_scenario_draws_vault_and_aws_into_one_deployment() {
    let AwsRig { rig, moto: _moto } = aws_rig().await;
    let webhook = webhook(&rig).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let items = format!(
        r#"
- name: payments-db
  storeRef: {{name: vault-backend}}
  data:
    - secretKey: DB_USERNAME
      remoteRef: {{key: payments/db, property: username}}
    - secretKey: DB_PASSWORD
      remoteRef: {{key: payments/db, property: password}}
- name: payments-fraud-feed
  storeRef: {{name: {STORE}, kind: SecretStore}}
  dataFrom:
    - extract: {{key: payments/fraud-feed}}
  inject: {{env: true, mountPath: /etc/fraud}}
"#
    );
    let (body, response) = webhook
        .mutate(&pod_review(
            "uid-mixed",
            Some((REPLICASET, &rs_uid)),
            SA,
            json!({"secret-injector.io/external-secrets": items}),
        ))
        .await;
    assert_eq!(response["allowed"], true, "{body}");

    let db = secret_data(
        &rig.standin
            .object("secrets", Some(NS), "payments-db")
            .unwrap(),
    );
    assert_eq!(db.len(), 2);
    assert_eq!(db["DB_USERNAME"], DB_USERNAME);
    assert_eq!(db["DB_PASSWORD"], DB_PASSWORD);
    let feed = secret_data(
        &rig.standin
            .object("secrets", Some(NS), "payments-fraud-feed")
            .unwrap(),
    );
    assert_eq!(feed.keys().collect::<Vec<_>>(), ["api_key", "endpoint"]);
    assert_eq!(feed["api_key"], AWS_FEED_KEY);
    assert_eq!(feed["endpoint"], AWS_FEED_ENDPOINT);
    assert_eq!(rig.standin.objects("secrets").len(), 2);

    // One patch referencing both managed Secrets.
    let patch = decoded_patch(&response).unwrap().to_string();
    for fragment in [
        r#""secretKeyRef":{"key":"DB_PASSWORD","name":"payments-db""#,
        r#""secretRef":{"name":"payments-fraud-feed","optional":false}"#,
        r#""secretName":"payments-fraud-feed""#,
        r#""mountPath":"/etc/fraud""#,
        "payments-db,payments-fraud-feed",
    ] {
        assert!(patch.contains(fragment), "{fragment} not in {patch}");
    }

    // One token per backend, both for the pod's own ServiceAccount, each with its audience.
    let mut audiences: Vec<(String, Vec<String>)> = rig
        .standin
        .token_requests()
        .into_iter()
        .map(|r| {
            assert_eq!((r.namespace.as_str(), r.service_account.as_str()), (NS, SA));
            (r.service_account, r.audiences)
        })
        .collect();
    audiences.sort();
    assert_eq!(
        audiences,
        vec![
            (SA.to_string(), vec!["sts.amazonaws.com".to_string()]),
            (SA.to_string(), vec!["vault".to_string()]),
        ]
    );
    assert_no_leak("response", &body, &SENTINELS);
    assert_no_leak("patch", &patch, &SENTINELS);
    assert_clean_log(&webhook);
}

#[tokio::test]
async fn secrets_from_one_aws_store_are_read_with_one_batch_call() {
    let AwsRig { rig, moto: _moto } = aws_rig().await;
    let webhook = webhook(&rig).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let annotations = json!({
        "secret-injector.io/store": STORE,
        "secret-injector.io/env.FEED_API_KEY": "payments/fraud-feed#api_key",
        "secret-injector.io/env.LEDGER_TOKEN": "payments/ledger-token",
        "secret-injector.io/file.ledger.der": "payments/ledger-cert"
    });
    let (body, response) = webhook
        .mutate(&pod_review(
            "uid-batch",
            Some((REPLICASET, &rs_uid)),
            SA,
            annotations,
        ))
        .await;
    assert_eq!(response["allowed"], true, "{body}");
    let secret = rig
        .standin
        .object("secrets", Some(NS), "payments-api-injected")
        .unwrap();
    assert_eq!(raw_data(&secret, "FEED_API_KEY"), AWS_FEED_KEY.as_bytes());
    assert_eq!(raw_data(&secret, "LEDGER_TOKEN"), LEDGER_TOKEN.as_bytes());
    // SecretBinary arrives as the raw bytes.
    assert_eq!(raw_data(&secret, "ledger.der"), CERT_BYTES);

    // Three secrets, one HTTP call to Secrets Manager.
    let metrics = webhook.metrics().await;
    assert_eq!(
        metric(&metrics, "batch_get_secret_value", "ok"),
        1,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "get_secret_value", "ok"), 0, "{metrics}");
    assert_eq!(
        metric(&metrics, "get_secret_value", "error"),
        0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "assume_role_with_web_identity", "ok"),
        1,
        "{metrics}"
    );
    assert_no_leak("response", &body, &SENTINELS);
    assert_clean_log(&webhook);
}

#[tokio::test]
async fn two_items_on_one_aws_store_still_make_one_batch_call() {
    let AwsRig { rig, moto: _moto } = aws_rig().await;
    let webhook = webhook(&rig).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let items = format!(
        r#"
- name: fraud-feed
  storeRef: {{name: {STORE}}}
  dataFrom: [{{extract: {{key: payments/fraud-feed}}}}]
- name: ledger
  storeRef: {{name: {STORE}}}
  data: [{{secretKey: LEDGER_TOKEN, remoteRef: {{key: payments/ledger-token}}}}]
"#
    );
    let (body, response) = webhook
        .mutate(&pod_review(
            "uid-two-items",
            Some((REPLICASET, &rs_uid)),
            SA,
            json!({"secret-injector.io/external-secrets": items}),
        ))
        .await;
    assert_eq!(response["allowed"], true, "{body}");
    assert!(rig
        .standin
        .object("secrets", Some(NS), "fraud-feed")
        .is_some());
    let ledger = rig.standin.object("secrets", Some(NS), "ledger").unwrap();
    assert_eq!(raw_data(&ledger, "LEDGER_TOKEN"), LEDGER_TOKEN.as_bytes());
    // Two managed Secrets from one store: their keys are read together.
    let metrics = webhook.metrics().await;
    assert_eq!(
        metric(&metrics, "batch_get_secret_value", "ok"),
        1,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "get_secret_value", "ok"), 0, "{metrics}");
    assert_no_leak("response", &body, &SENTINELS);
}

#[tokio::test]
async fn versions_select_a_stage_or_a_version_id() {
    let AwsRig { rig, moto } = aws_rig().await;
    let first = moto
        .secretsmanager(
            AWS_REGION,
            "CreateSecret",
            json!({"Name": "payments/rotating", "SecretString": OLD_TOKEN}),
        )
        .await
        .unwrap()["VersionId"]
        .as_str()
        .unwrap()
        .to_string();
    moto.put_secret_value(AWS_REGION, "payments/rotating", NEW_TOKEN)
        .await;
    let webhook = webhook(&rig).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let items = format!(
        r#"
- name: rotating
  storeRef: {{name: {STORE}}}
  data:
    - {{secretKey: CURRENT, remoteRef: {{key: payments/rotating}}}}
    - {{secretKey: PREVIOUS, remoteRef: {{key: payments/rotating, version: AWSPREVIOUS}}}}
    - {{secretKey: BY_ID, remoteRef: {{key: payments/rotating, version: {first}}}}}
"#
    );
    let (body, response) = webhook
        .mutate(&pod_review(
            "uid-versions",
            Some((REPLICASET, &rs_uid)),
            SA,
            json!({"secret-injector.io/external-secrets": items}),
        ))
        .await;
    assert_eq!(response["allowed"], true, "{body}");
    let data = secret_data(&rig.standin.object("secrets", Some(NS), "rotating").unwrap());
    assert_eq!(data["CURRENT"], NEW_TOKEN);
    assert_eq!(data["PREVIOUS"], OLD_TOKEN);
    assert_eq!(data["BY_ID"], OLD_TOKEN);
    assert_no_leak("response", &body, &SENTINELS);
}

#[tokio::test]
async fn aws_failures_are_denied_naming_the_cause_and_nothing_is_written() {
    let AwsRig { rig, moto } = aws_rig().await;
    rig.seed_service_account("intruder", None);
    rig.seed_service_account("typo", Some("arn:aws:iam::123:role/short-account"));
    let webhook = webhook(&rig).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let short = |pairs: &[(&str, &str)]| {
        let mut a = json!({"secret-injector.io/store": STORE});
        for (k, v) in pairs {
            a[format!("secret-injector.io/{k}")] = json!(v);
        }
        a
    };
    let other_region = format!(
        "arn:aws:secretsmanager:us-east-1:{}:secret:payments/fraud-feed",
        test_rig::moto::ACCOUNT
    );
    // (name, ServiceAccount, annotations, fragments, TokenRequests allowed)
    let cases: Vec<(&str, &str, Value, Vec<&str>, bool)> = vec![
        (
            "missing role",
            "intruder",
            short(&[("env.FEED_API_KEY", "payments/fraud-feed#api_key")]),
            vec![
                "SecretStore aws-sm",
                "payments/fraud-feed",
                "ServiceAccount payments/intruder",
                "eks.amazonaws.com/role-arn",
                "spec.provider.aws.role",
            ],
            false,
        ),
        (
            "malformed role annotation",
            "typo",
            short(&[("env.FEED_API_KEY", "payments/fraud-feed#api_key")]),
            vec![
                "eks.amazonaws.com/role-arn",
                "not an IAM role ARN",
                "fix the annotation",
            ],
            false,
        ),
        (
            "ARN in another region",
            SA,
            short(&[("env.FEED_API_KEY", &format!("{other_region}#api_key"))]),
            vec!["region us-east-1", "eu-west-1"],
            false,
        ),
        (
            "unknown secret",
            SA,
            short(&[("env.MISSING", "payments/missing")]),
            vec![
                "SecretStore aws-sm",
                "payments/missing",
                "not found",
                "ResourceNotFoundException",
            ],
            true,
        ),
        (
            "unknown secret in a batch",
            SA,
            short(&[
                ("env.FEED_API_KEY", "payments/fraud-feed#api_key"),
                ("env.MISSING", "payments/missing"),
            ]),
            vec!["SecretStore aws-sm", "payments/missing", "not found"],
            true,
        ),
        (
            "property on a non-JSON secret",
            SA,
            short(&[("env.LEDGER", "payments/ledger-token#token")]),
            vec![
                "SecretStore aws-sm",
                "payments/ledger-token",
                "not a JSON object",
                "\"token\"",
            ],
            true,
        ),
        (
            "missing property",
            SA,
            short(&[("env.FEED", "payments/fraud-feed#apikey")]),
            vec![
                "payments/fraud-feed",
                "property \"apikey\" is missing",
                "api_key, endpoint",
            ],
            true,
        ),
        (
            "extract of a non-JSON secret",
            SA,
            json!({"secret-injector.io/external-secrets": format!(
                "- name: ledger\n  storeRef: {{name: {STORE}}}\n  dataFrom:\n    - extract: {{key: payments/ledger-token}}"
            )}),
            vec!["payments/ledger-token", "cannot be extracted"],
            true,
        ),
        (
            "unknown version stage",
            SA,
            json!({"secret-injector.io/external-secrets": format!(
                "- name: feed\n  storeRef: {{name: {STORE}}}\n  data:\n    - {{secretKey: K, remoteRef: {{key: payments/fraud-feed, property: api_key, version: AWSPENDING}}}}"
            )}),
            vec!["payments/fraud-feed", "not found"],
            true,
        ),
    ];
    for (i, (name, sa, annotations, fragments, may_mint)) in cases.into_iter().enumerate() {
        rig.standin.reset_counts();
        rig.standin.clear_token_records();
        let uid = format!("uid-aws-bad-{i}");
        let (body, response) = webhook
            .mutate(&pod_review(
                &uid,
                Some((REPLICASET, &rs_uid)),
                sa,
                annotations,
            ))
            .await;
        assert_eq!(response["uid"], uid.as_str(), "{name}");
        assert_eq!(response["allowed"], false, "{name}: {body}");
        let message = response["status"]["message"].as_str().unwrap();
        eprintln!("{name}: {message}");
        for f in &fragments {
            assert!(
                message.contains(f),
                "{name}: {message:?} should contain {f:?}"
            );
        }
        assert!(response.get("patch").is_none(), "{name}");
        assert_eq!(
            rig.standin.writes("secrets"),
            0,
            "{name}: nothing may be written"
        );
        if !may_mint {
            assert!(
                rig.standin.token_requests().is_empty(),
                "{name}: refused before any TokenRequest"
            );
        }
        assert_no_leak(name, &body, &SENTINELS);
        assert!(!body.contains("eyJ"), "{name}: a JWT reached the response");
    }
    assert!(rig.standin.objects("secrets").is_empty());
    // The refusals before any TokenRequest made no AWS call either.
    let metrics = webhook.metrics().await;
    assert_eq!(
        metric(&metrics, "assume_role_with_web_identity", "ok"),
        1,
        "one session served every case that reached AWS: {metrics}"
    );
    assert_clean_log(&webhook);
    drop(moto);
}

#[tokio::test]
async fn the_refresher_picks_up_a_rotation_in_secrets_manager() {
    let AwsRig { rig, moto } = aws_rig().await;
    let webhook = start_webhook(
        &rig.standin,
        &[
            "--allowed-aws-endpoints",
            "http://127.0.0.1:*",
            "--min-refresh-interval",
            "1s",
            "--rollout-debounce",
            "1s",
        ],
    )
    .await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let annotations = json!({
        "secret-injector.io/store": STORE,
        "secret-injector.io/env.LEDGER_TOKEN": "payments/ledger-token",
        "secret-injector.io/refresh-interval": "1s"
    });
    let (body, response) = webhook
        .mutate(&pod_review(
            "uid-aws-refresh",
            Some((REPLICASET, &rs_uid)),
            SA,
            annotations,
        ))
        .await;
    assert_eq!(response["allowed"], true, "{body}");
    moto.put_secret_value(AWS_REGION, "payments/ledger-token", NEW_TOKEN)
        .await;
    let token = || {
        rig.standin
            .object("secrets", Some(NS), "payments-api-injected")
            .map(|s| raw_data(&s, "LEDGER_TOKEN"))
    };
    wait_for(
        "the rotated AWS value",
        std::time::Duration::from_secs(10),
        || token().as_deref() == Some(NEW_TOKEN.as_bytes()),
    )
    .await;
    wait_for("the rollout", std::time::Duration::from_secs(5), || {
        rig.standin
            .object("deployments", Some(NS), DEPLOYMENT)
            .is_some_and(|d| {
                d["spec"]["template"]["metadata"]["annotations"]["secret-injector.io/restarted-at"]
                    .is_string()
            })
    })
    .await;
    assert_clean_log(&webhook);
}
