//! End to end: the real binary over TLS, the Kubernetes API stand-in, and a real OpenBao whose
//! Kubernetes auth method calls the stand-in's TokenReview.

mod support;

use serde_json::{json, Value};
use support::start_webhook;
use test_rig::payments::*;

const SENTINELS: [&str; 3] = [DB_USERNAME, DB_PASSWORD, FEED_KEY];

fn short_form() -> Value {
    json!({
        "secret-injector.io/store": "vault-backend",
        "secret-injector.io/env.DB_USERNAME": "payments/db#username",
        "secret-injector.io/env.DB_PASSWORD": "payments/db#password"
    })
}

fn env_refs(patch: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for op in patch.as_array().unwrap() {
        let values: Vec<&Value> = match &op["value"] {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for v in values {
            if let Some(r) = v.pointer("/valueFrom/secretKeyRef") {
                out.push((
                    v["name"].as_str().unwrap().to_string(),
                    r["name"].as_str().unwrap().to_string(),
                    r["key"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn deployment_pod_gets_vault_values_through_a_managed_secret() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &[]).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let deployment_uid = rig
        .standin
        .object("deployments", Some(NS), DEPLOYMENT)
        .unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let review = pod_review("uid-e2e-1", Some((REPLICASET, &rs_uid)), SA, short_form());

    let (body, response) = webhook.mutate(&review).await;
    assert_eq!(response["uid"], "uid-e2e-1");
    assert_eq!(response["allowed"], true, "{body}");
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = decoded_patch(&response).unwrap();
    assert_eq!(
        env_refs(&patch),
        vec![
            (
                "DB_PASSWORD".into(),
                "payments-api-injected".into(),
                "DB_PASSWORD".into()
            ),
            (
                "DB_USERNAME".into(),
                "payments-api-injected".into(),
                "DB_USERNAME".into()
            ),
        ]
    );

    // The managed Secret holds exactly the Vault values and belongs to the Deployment.
    let secret = rig
        .standin
        .object("secrets", Some(NS), "payments-api-injected")
        .expect("managed Secret");
    let data = secret_data(&secret);
    assert_eq!(data.len(), 2);
    assert_eq!(data["DB_USERNAME"], DB_USERNAME);
    assert_eq!(data["DB_PASSWORD"], DB_PASSWORD);
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "secret-injector"
    );
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["kind"].as_str(),
            owner["name"].as_str(),
            owner["uid"].as_str()
        ),
        (
            Some("Deployment"),
            Some(DEPLOYMENT),
            Some(deployment_uid.as_str())
        )
    );
    let ann = &secret["metadata"]["annotations"];
    assert_eq!(ann["secret-injector.io/service-account"], SA);
    assert_eq!(ann["secret-injector.io/owner"], "Deployment/payments-api");
    assert_eq!(ann["secret-injector.io/refresh-interval"], "1h");
    assert_eq!(
        ann["secret-injector.io/data-hmac"].as_str().unwrap().len(),
        64
    );

    // The token was requested for the pod's own ServiceAccount, with the store's audience.
    let requests = rig.standin.token_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        (
            requests[0].namespace.as_str(),
            requests[0].service_account.as_str()
        ),
        (NS, SA)
    );
    assert_eq!(requests[0].audiences, vec!["vault".to_string()]);
    assert_eq!(requests[0].expiration_seconds, 600);
    assert!(rig
        .standin
        .token_reviews()
        .iter()
        .any(|r| r.authenticated && r.audiences == vec!["vault".to_string()]));

    // No value anywhere it must not be: response (raw and decoded patch), Secret annotations, logs.
    assert_no_leak("response", &body, &SENTINELS);
    assert_no_leak("patch", &patch.to_string(), &SENTINELS);
    assert_no_leak(
        "secret annotations",
        &secret["metadata"].to_string(),
        &SENTINELS,
    );
    assert_no_leak("webhook log", &webhook.logs(), &SENTINELS);
    assert!(!webhook.logs().contains("eyJ"), "a JWT reached the log");

    // Metrics count it.
    let metrics = webhook.metrics().await;
    assert!(
        metrics.contains(
            r#"secret_injector_admission_requests_total{webhook="mutate",result="patched"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"secret_injector_backend_requests_total{provider="vault",operation="login",result="ok"} 1"#), "{metrics}");
}

#[tokio::test]
async fn unbound_service_account_is_denied_with_the_403_even_right_after_a_bound_one() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &[]).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let (_, ok) = webhook
        .mutate(&pod_review(
            "uid-bound",
            Some((REPLICASET, &rs_uid)),
            SA,
            short_form(),
        ))
        .await;
    assert_eq!(ok["allowed"], true);

    // Another workload, same store and path, running as a ServiceAccount Vault does not bind.
    rig.seed_deployment("fraud-worker", "fraud-worker-66b5d");
    let other_rs = rig.replicaset_uid("fraud-worker-66b5d");
    rig.standin.reset_counts();
    let (body, denied) = webhook
        .mutate(&pod_review(
            "uid-intruder",
            Some(("fraud-worker-66b5d", &other_rs)),
            "intruder",
            short_form(),
        ))
        .await;
    assert_eq!(denied["uid"], "uid-intruder");
    assert_eq!(denied["allowed"], false);
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(message.contains("SecretStore vault-backend"), "{message}");
    assert!(message.contains("403"), "{message}");
    assert!(message.contains("payments/db"), "{message}");
    assert!(message.contains("payments/intruder"), "{message}");
    assert!(rig
        .standin
        .object("secrets", Some(NS), "fraud-worker-injected")
        .is_none());
    assert_eq!(rig.standin.writes("secrets"), 0);
    assert!(denied.get("patch").is_none());
    assert_no_leak("denial", &body, &SENTINELS);
    assert!(!body.contains("eyJ"), "a JWT reached the response");
}

#[tokio::test]
async fn full_form_with_two_items_writes_two_secrets_and_references_both() {
    let rig = Rig::start().await;
    rig.seed_store("legacy-kv", json!({"path": "kv1", "version": "v1"}));
    let webhook = start_webhook(&rig.standin, &[]).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let items = r#"
- name: payments-db
  storeRef: {name: vault-backend}
  data:
    - secretKey: DB_PASSWORD
      remoteRef: {key: payments/db, property: password}
  dataFrom:
    - extract: {key: payments/fraud-feed}
- name: payments-legacy
  storeRef: {name: legacy-kv, kind: SecretStore}
  refreshInterval: 15m
  data:
    - secretKey: token
      remoteRef: {key: payments/legacy, property: token}
  inject: {env: false, mountPath: /etc/legacy}
"#;
    let review = pod_review(
        "uid-full",
        Some((REPLICASET, &rs_uid)),
        SA,
        json!({"secret-injector.io/external-secrets": items}),
    );
    let (body, response) = webhook.mutate(&review).await;
    assert_eq!(response["allowed"], true, "{body}");

    let db = secret_data(
        &rig.standin
            .object("secrets", Some(NS), "payments-db")
            .unwrap(),
    );
    assert_eq!(
        db.keys().collect::<Vec<_>>(),
        ["DB_PASSWORD", "api_key", "endpoint"]
    );
    assert_eq!(db["DB_PASSWORD"], DB_PASSWORD);
    assert_eq!(db["api_key"], FEED_KEY);
    let legacy = rig
        .standin
        .object("secrets", Some(NS), "payments-legacy")
        .unwrap();
    assert_eq!(secret_data(&legacy)["token"], "legacy_SENTINEL_tok");
    assert_eq!(
        legacy["metadata"]["annotations"]["secret-injector.io/refresh-interval"],
        "15m"
    );

    let patch = decoded_patch(&response).unwrap().to_string();
    assert!(
        patch.contains(r#""secretRef":{"name":"payments-db","optional":false}"#),
        "{patch}"
    );
    assert!(
        patch.contains(r#""secretName":"payments-legacy""#),
        "{patch}"
    );
    assert!(patch.contains(r#""mountPath":"/etc/legacy""#), "{patch}");
    assert!(patch.contains("payments-db,payments-legacy"), "{patch}");
    assert_no_leak(
        "response",
        &body,
        &[DB_PASSWORD, FEED_KEY, "legacy_SENTINEL_tok"],
    );
}

#[tokio::test]
async fn reinvocation_is_a_no_op_and_dry_run_has_no_side_effects() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &[]).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);

    // Dry run first: the same patch comes back, with no TokenRequest and no Secret written.
    let mut dry = pod_review("uid-dry", Some((REPLICASET, &rs_uid)), SA, short_form());
    dry["request"]["dryRun"] = json!(true);
    let (_, dry_response) = webhook.mutate(&dry).await;
    assert_eq!(dry_response["allowed"], true);
    assert!(rig.standin.token_requests().is_empty());
    assert_eq!(rig.standin.writes("secrets"), 0);
    assert!(rig
        .standin
        .object("secrets", Some(NS), "payments-api-injected")
        .is_none());

    let mut review = pod_review("uid-first", Some((REPLICASET, &rs_uid)), SA, short_form());
    let (_, first) = webhook.mutate(&review).await;
    assert_eq!(
        decoded_patch(&first),
        decoded_patch(&dry_response),
        "dry run must return the same patch"
    );
    assert_eq!(rig.standin.writes("secrets"), 1);

    // Reinvocation: the patched pod comes back; nothing to add, nothing to write.
    apply_patch(&mut review, &first);
    review["request"]["uid"] = json!("uid-again");
    // Let the managed-Secret watch deliver the Secret just created.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    rig.standin.reset_counts();
    let (_, again) = webhook.mutate(&review).await;
    assert_eq!(again["uid"], "uid-again");
    assert_eq!(again["allowed"], true);
    assert!(
        again.get("patch").is_none(),
        "expected no patch, got {again}"
    );
    assert_eq!(rig.standin.writes("secrets"), 0);
    assert_eq!(
        rig.standin.count("create", "serviceaccounts/token"),
        0,
        "a warm admission must not mint tokens"
    );
    // Warm means from memory: no owner, store or Secret read either (the watch-fed index and
    // the owner/store caches answer).
    for resource in ["secrets", "replicasets", "deployments", "secretstores"] {
        assert_eq!(
            rig.standin.count("get", resource),
            0,
            "warm admission read {resource}"
        );
    }
}

#[tokio::test]
async fn a_secret_we_do_not_own_is_never_touched() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &[]).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let foreign = rig.standin.seed(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "payments-api-injected", "namespace": NS, "labels": {"team": "payments"}},
        "type": "Opaque",
        "data": {"DB_PASSWORD": "aGFuZHMtb2Zm"}
    }));
    let (_, response) = webhook
        .mutate(&pod_review(
            "uid-foreign",
            Some((REPLICASET, &rs_uid)),
            SA,
            short_form(),
        ))
        .await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("payments-api-injected")
            && message.contains("not managed by secret-injector"),
        "{message}"
    );
    let after = rig
        .standin
        .object("secrets", Some(NS), "payments-api-injected")
        .unwrap();
    assert_eq!(
        after["metadata"]["resourceVersion"],
        foreign["metadata"]["resourceVersion"]
    );
    assert_eq!(after["data"], foreign["data"]);
    assert_eq!(rig.standin.writes("secrets"), 0);
    assert!(
        rig.standin.token_requests().is_empty(),
        "the guard runs before any TokenRequest"
    );
}

#[tokio::test]
async fn bad_inputs_are_denied_naming_the_field_and_nothing_is_written() {
    let rig = Rig::start().await;
    rig.seed_store("wrong-version", json!({"version": "v1"}));
    rig.standin.seed(json!({
        "apiVersion": "secret-injector.io/v1alpha1", "kind": "ClusterSecretStore",
        "metadata": {"name": "shared"},
        "spec": {"provider": {"vault": {"server": rig.bao.addr(), "path": "secret", "auth": {"kubernetes": {"role": "payments", "audiences": ["vault"]}}}},
                 "conditions": [{"namespaces": ["platform"]}]}
    }));
    let webhook = start_webhook(&rig.standin, &[]).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let base = |extra: Value| {
        let mut a = short_form();
        merge(&mut a, extra);
        a
    };
    let full = |yaml: &str| json!({"secret-injector.io/external-secrets": yaml});
    let cases: Vec<(&str, Value, &[&str])> = vec![
        ("unknown key", base(json!({"secret-injector.io/bogus": "x"})), &["secret-injector.io/bogus", "unknown annotation"]),
        ("bad duration", base(json!({"secret-injector.io/refresh-interval": "1 day"})), &["secret-injector.io/refresh-interval", "not a duration"]),
        ("empty env name", base(json!({"secret-injector.io/env.": "payments/db#username"})), &["secret-injector.io/env.", "empty"]),
        ("invalid env name", base(json!({"secret-injector.io/env.DB-URL": "payments/db#username"})), &["secret-injector.io/env.DB-URL", "environment variable"]),
        ("missing store", json!({"secret-injector.io/env.DB_PASSWORD": "payments/db#password"}), &["secret-injector.io/store", "missing"]),
        ("store not found", base(json!({"secret-injector.io/store": "nope"})), &["SecretStore nope not found in namespace payments"]),
        ("cluster store not allowed", base(json!({"secret-injector.io/store": "ClusterSecretStore/shared"})), &["ClusterSecretStore shared", "does not allow namespace payments"]),
        ("KV version mismatch", base(json!({"secret-injector.io/store": "wrong-version"})), &["SecretStore wrong-version", "spec.provider.vault.version", "KV v2"]),
        ("path not found", base(json!({"secret-injector.io/env.DB_PASSWORD": "payments/missing#password"})), &["SecretStore vault-backend", "payments/missing", "not found"]),
        ("property missing", base(json!({"secret-injector.io/env.DB_PASSWORD": "payments/db#pass"})), &["SecretStore vault-backend", "payments/db", "property \"pass\" is missing", "password, username"]),
        ("mixed forms", base(json!({"secret-injector.io/external-secrets": "[]"})), &["secret-injector.io/external-secrets", "cannot be mixed"]),
        ("duplicate target key", full("- name: a\n  storeRef: {name: vault-backend}\n  data:\n    - {secretKey: K, remoteRef: {key: payments/db, property: username}}\n    - {secretKey: K, remoteRef: {key: payments/db, property: password}}"), &["secret-injector.io/external-secrets[0].data", "duplicate target key \"K\""]),
        ("extract collides with data", full("- name: a\n  storeRef: {name: vault-backend}\n  data:\n    - {secretKey: api_key, remoteRef: {key: payments/db, property: username}}\n  dataFrom:\n    - extract: {key: payments/fraud-feed}"), &["secret-injector.io/external-secrets[0]", "\"api_key\" is produced twice"]),
        ("version on KV v1", full("- name: a\n  storeRef: {name: wrong-version}\n  data:\n    - {secretKey: K, remoteRef: {key: payments/db, property: username, version: 2}}"), &["SecretStore wrong-version", "remoteRef.version", "v1"]),
        ("path traversal", base(json!({"secret-injector.io/env.DB_PASSWORD": "payments/../../sys/mounts#x"})), &["secret-injector.io/env.DB_PASSWORD", "'..'"]),
        ("unknown container", base(json!({"secret-injector.io/containers": "ghost"})), &["secret-injector.io/containers", "ghost"]),
    ];
    for (i, (name, annotations, fragments)) in cases.into_iter().enumerate() {
        rig.standin.reset_counts();
        let uid = format!("uid-bad-{i}");
        let (body, response) = webhook
            .mutate(&pod_review(
                &uid,
                Some((REPLICASET, &rs_uid)),
                SA,
                annotations,
            ))
            .await;
        assert_eq!(response["uid"], uid.as_str(), "{name}");
        assert_eq!(response["allowed"], false, "{name}: {body}");
        let message = response["status"]["message"].as_str().unwrap();
        eprintln!("{name}: {message}");
        for f in fragments {
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
        assert_no_leak(name, &body, &SENTINELS);
    }
    assert!(rig.standin.objects("secrets").is_empty());
    assert_no_leak("webhook log", &webhook.logs(), &SENTINELS);
}

#[tokio::test]
async fn pods_without_our_annotations_cost_nothing() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &[]).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    rig.standin.reset_counts();
    for (uid, annotations) in [
        ("uid-plain", json!({"prometheus.io/scrape": "true"})),
        (
            "uid-optout",
            json!({"secret-injector.io/inject": "false", "secret-injector.io/store": "vault-backend", "secret-injector.io/env.A": "payments/db#username"}),
        ),
    ] {
        let (_, response) = webhook
            .mutate(&pod_review(
                uid,
                Some((REPLICASET, &rs_uid)),
                SA,
                annotations,
            ))
            .await;
        assert_eq!(response["uid"], uid);
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none());
    }
    // The binary's background work (leader Lease, store status, the refresher's watches) also
    // talks to the API; none of it reads or writes what an admission would.
    let admission_calls: Vec<_> = rig
        .standin
        .counts()
        .into_iter()
        .filter(|((verb, resource), n)| {
            *n > 0
                && !matches!(verb.as_str(), "list" | "watch")
                && !matches!(
                    resource.as_str(),
                    "leases" | "secretstores/status" | "clustersecretstores/status"
                )
        })
        .collect();
    assert!(admission_calls.is_empty(), "{admission_calls:?}");
}

#[tokio::test]
async fn malformed_bodies_get_a_clean_answer() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &[]).await;
    let (status, body) = webhook.post("/mutate", b"{not json".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = webhook
        .post(
            "/mutate",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200);
    let review: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(review["response"]["allowed"], false);
    // A parsable envelope with an undecodable pod still gets its uid back.
    let mut review = pod_review("uid-broken-pod", None, SA, short_form());
    review["request"]["object"]["spec"]["containers"] = json!("not-a-list");
    let (_, response) = webhook.mutate(&review).await;
    assert_eq!(response["uid"], "uid-broken-pod");
    assert_eq!(response["allowed"], false);
    assert!(response["status"]["message"]
        .as_str()
        .unwrap()
        .contains("could not be decoded"));
    // The server is still up.
    let (_, ok) = webhook
        .mutate(&pod_review("uid-after", None, SA, json!({})))
        .await;
    assert_eq!(ok["allowed"], true);
}

#[tokio::test]
async fn bare_pod_uses_its_own_name_and_has_no_owner_reference() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &[]).await;
    let (_, response) = webhook
        .mutate(&pod_review("uid-bare", None, SA, short_form()))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    let secret = rig
        .standin
        .object("secrets", Some(NS), "lonely-pod-injected")
        .expect("Secret named after the pod");
    assert!(secret["metadata"].get("ownerReferences").is_none());
    assert_eq!(
        secret["metadata"]["annotations"]["secret-injector.io/owner"],
        "Pod/lonely-pod"
    );
}

#[tokio::test]
async fn jwt_auth_method_logs_in_with_the_pods_own_token() {
    let rig = Rig::start().await;
    rig.bao
        .enable_jwt_auth("jwt", &rig.standin.issuer(), &rig.standin.public_key_pem())
        .await;
    rig.bao
        .jwt_role(
            "jwt",
            "payments-jwt",
            &format!("system:serviceaccount:{NS}:{SA}"),
            &["vault"],
            &["payments-read"],
        )
        .await;
    rig.seed_store(
        "vault-jwt",
        json!({"auth": {"kubernetes": null, "jwt": {"path": "jwt", "role": "payments-jwt", "audiences": ["vault"]}}}),
    );
    let webhook = start_webhook(&rig.standin, &[]).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let mut annotations = short_form();
    annotations["secret-injector.io/store"] = json!("vault-jwt");
    let (body, response) = webhook
        .mutate(&pod_review(
            "uid-jwt",
            Some((REPLICASET, &rs_uid)),
            SA,
            annotations.clone(),
        ))
        .await;
    assert_eq!(response["allowed"], true, "{body}");
    let data = secret_data(
        &rig.standin
            .object("secrets", Some(NS), "payments-api-injected")
            .unwrap(),
    );
    assert_eq!(data["DB_PASSWORD"], DB_PASSWORD);
    assert_eq!(
        rig.standin.token_requests()[0].audiences,
        vec!["vault".to_string()]
    );
    // JWT auth validates the signature locally: the stand-in's TokenReview is not consulted.
    assert!(rig.standin.token_reviews().is_empty());

    // The role binds the subject: another ServiceAccount's token is refused.
    rig.seed_deployment("fraud-worker", "fraud-worker-66b5d");
    let other_rs = rig.replicaset_uid("fraud-worker-66b5d");
    let (_, denied) = webhook
        .mutate(&pod_review(
            "uid-jwt-2",
            Some(("fraud-worker-66b5d", &other_rs)),
            "intruder",
            annotations,
        ))
        .await;
    assert_eq!(denied["allowed"], false);
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("SecretStore vault-jwt") && message.contains("auth/jwt/login"),
        "{message}"
    );
}
