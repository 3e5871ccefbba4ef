//! `make demo`: the payments story end to end on this machine, with no cluster.
//!
//! Starts a real OpenBao (dev mode) and the in-repo Kubernetes API stand-in, runs the real
//! `secret-injector serve` binary over TLS, creates a labelled namespace, a ServiceAccount, a
//! Vault policy and Kubernetes-auth role, a SecretStore and an annotated Deployment, sends the
//! Deployment's pod through `/mutate` exactly as the API server would, and prints the patch and
//! the managed Secret (values redacted). Then the AWS half: a moto server stands in for STS and
//! Secrets Manager, the ServiceAccount gets its IRSA role annotation, and a second Deployment
//! draws the Vault database credentials and the Secrets Manager fraud feed in one pod through
//! the full form. Then the dynamic half: OpenBao's database engine issues PostgreSQL credentials
//! once per workload, and they outlive the short login token. Everything is stopped on exit.

mod dynamic_demo;
mod support;

use std::process::ExitCode;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_standin::StandIn;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::start_webhook;
use test_rig::moto::Moto;
use test_rig::openbao::OpenBao;
use test_rig::payments::{apply_patch, decoded_patch, pod_review};
use test_rig::webhook::Webhook;

fn step(n: u32, text: &str) {
    println!("\n\x1b[1m[{n}] {text}\x1b[0m");
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(demo()) {
        Ok(()) => {
            println!("\n\x1b[1;32mdemo finished: the pod was admitted with references only; the values live in the managed Secret.\x1b[0m");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\n\x1b[1;31mdemo failed: {e}\x1b[0m");
            ExitCode::FAILURE
        }
    }
}

async fn demo() -> Result<(), String> {
    step(
        1,
        "Starting OpenBao (bao server -dev) and the Kubernetes API stand-in",
    );
    let bao = OpenBao::start().await;
    let standin = StandIn::start().await;
    println!("    OpenBao   {}", bao.addr());
    println!("    API       {}", standin.url());
    let client = standin.client();
    let pp = PostParams::default();

    step(
        2,
        "Platform team: label the namespace and create the workload's ServiceAccount",
    );
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "payments", "labels": {"secret-injector.io/inject": "enabled"}}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &ns)
        .await
        .map_err(|e| e.to_string())?;
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "payments-api"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), "payments")
        .create(&pp, &sa)
        .await
        .map_err(|e| e.to_string())?;
    println!("    namespace/payments  label secret-injector.io/inject=enabled");
    println!("    serviceaccount/payments-api");

    step(
        3,
        "Security team: the secret lives in Vault, readable only by payments/payments-api",
    );
    bao.kv_put(
        "secret",
        2,
        "payments/db",
        json!({"username": "payments_app", "password": "demo-only-not-a-real-password"}),
    )
    .await;
    bao.write_policy(
        "payments-read",
        r#"path "secret/data/payments/*" { capabilities = ["read"] }"#,
    )
    .await;
    standin.seed(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}),
    );
    standin.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "vault-reviewer", "namespace": "kube-system"}}));
    let reviewer = standin.issue_token("kube-system", "vault-reviewer", &[], 3600);
    bao.enable_kubernetes_auth("kubernetes", &standin.url(), &reviewer)
        .await;
    bao.kubernetes_role(
        "kubernetes",
        "payments",
        &["payments-api"],
        &["payments"],
        &["payments-read"],
        Some("vault"),
    )
    .await;
    println!("    secret/payments/db          {{username, password}}");
    println!("    policy payments-read        read secret/data/payments/*");
    println!("    auth/kubernetes/role/payments  bound to payments/payments-api, audience vault");

    step(4, "Platform team: a SecretStore for the namespace");
    let store = json!({
        "apiVersion": "secret-injector.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "vault-backend", "namespace": "payments"},
        "spec": {"provider": {"vault": {"server": bao.addr(), "path": "secret", "version": "v2",
            "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "payments", "audiences": ["vault"]}}}}}
    });
    let store_api: Api<secret_injector::store::SecretStore> =
        Api::namespaced(client.clone(), "payments");
    store_api
        .create(&pp, &serde_json::from_value(store).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "    secretstore/vault-backend → {} (KV v2 at secret/, Kubernetes auth)",
        bao.addr()
    );

    step(5, "App team: annotate the Deployment's pod template");
    let annotations = json!({
        "secret-injector.io/store": "vault-backend",
        "secret-injector.io/env.DB_USERNAME": "payments/db#username",
        "secret-injector.io/env.DB_PASSWORD": "payments/db#password",
        // Short so the demo can show a rotation; production values are minutes to hours.
        "secret-injector.io/refresh-interval": "3s"
    });
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "payments-api"},
        "spec": {"selector": {"matchLabels": {"app": "payments-api"}},
            "template": {"metadata": {"labels": {"app": "payments-api"}, "annotations": annotations},
                "spec": {"serviceAccountName": "payments-api", "containers": [{"name": "app", "image": "payments:1"}]}}}
    }))
    .unwrap();
    let deployment = Api::<Deployment>::namespaced(client.clone(), "payments")
        .create(&pp, &deployment)
        .await
        .map_err(|e| e.to_string())?;
    for (k, v) in annotations.as_object().unwrap() {
        println!("    {k}: {}", v.as_str().unwrap());
    }
    // What the Deployment controller would do next: a ReplicaSet owned by the Deployment.
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "payments-api-7c9f8d6b5", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "payments-api",
            "uid": deployment.metadata.uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"selector": {"matchLabels": {"app": "payments-api"}}}
    }))
    .unwrap();
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), "payments")
        .create(&pp, &rs)
        .await
        .map_err(|e| e.to_string())?;

    step(
        6,
        "Starting the webhook: secret-injector serve (TLS, real binary)",
    );
    // The AWS half (below) talks to moto on loopback; the operator allows that endpoint.
    let webhook = start_webhook(
        &standin,
        &[
            "--allowed-aws-endpoints",
            "http://127.0.0.1:*",
            // Demo-sized timings: the refresher may honour a 3s interval and roll after 1s.
            "--min-refresh-interval",
            "3s",
            "--rollout-debounce",
            "1s",
        ],
    )
    .await;
    println!(
        "    {}/mutate   admin {}/metrics",
        webhook.url, webhook.admin_url
    );

    step(
        7,
        "The ReplicaSet creates a pod: the API server sends it to /mutate",
    );
    let rs_uid = rs.metadata.uid.unwrap_or_default();
    let mut review = pod_review(
        "demo-0001",
        Some(("payments-api-7c9f8d6b5", &rs_uid)),
        "payments-api",
        annotations.clone(),
    );
    let (_, response) = webhook.mutate(&review).await;
    if response["allowed"] != true {
        return Err(format!(
            "the pod was denied: {}",
            response["status"]["message"]
        ));
    }
    let patch = decoded_patch(&response).ok_or("no patch in the response")?;
    println!("    allowed: true, uid echoed: {}", response["uid"]);
    println!("    JSONPatch:");
    for line in serde_json::to_string_pretty(&patch).unwrap().lines() {
        println!("      {line}");
    }

    step(8, "The managed Secret (values redacted)");
    let secret = Api::<Secret>::namespaced(client.clone(), "payments")
        .get("payments-api-injected")
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "    secret/payments-api-injected  type {}",
        secret.type_.as_deref().unwrap_or("")
    );
    for (k, v) in secret.data.iter().flatten() {
        println!("      {k}: <redacted, {} bytes>", v.0.len());
    }
    for (k, v) in secret.metadata.annotations.iter().flatten() {
        println!("      annotation {k}: {v}");
    }
    for o in secret.metadata.owner_references.iter().flatten() {
        println!("      ownerReference {}/{}", o.kind, o.name);
    }
    let tokens = standin.token_requests();
    println!(
        "    TokenRequests: {} (for {}/{} audience {:?})",
        tokens.len(),
        tokens.first().map(|t| t.namespace.as_str()).unwrap_or("-"),
        tokens
            .first()
            .map(|t| t.service_account.as_str())
            .unwrap_or("-"),
        tokens
            .first()
            .map(|t| t.audiences.clone())
            .unwrap_or_default()
    );

    step(
        9,
        "The next pod of the same Deployment: served from the existing Secret",
    );
    apply_patch(&mut review, &response);
    let before = standin.token_requests().len();
    let fresh = pod_review(
        "demo-0002",
        Some(("payments-api-7c9f8d6b5", &rs_uid)),
        "payments-api",
        annotations,
    );
    let (_, second) = webhook.mutate(&fresh).await;
    if second["allowed"] != true || standin.token_requests().len() != before {
        return Err(
            "the second pod should be admitted from the existing Secret without a TokenRequest"
                .into(),
        );
    }
    println!(
        "    allowed: {}, new TokenRequests: {}, Vault calls: none (the Secret is current)",
        second["allowed"],
        standin.token_requests().len() - before
    );

    let moto = aws_half(&standin, &client, &webhook).await?;

    step(
        14,
        "Security team rotates the DB password in Vault: the refresher updates the Secret and rolls the Deployment",
    );
    bao.kv_put(
        "secret",
        2,
        "payments/db",
        json!({"username": "payments_app", "password": "demo-only-rotated-password"}),
    )
    .await;
    let secrets = Api::<Secret>::namespaced(client.clone(), "payments");
    let deployments = Api::<Deployment>::namespaced(client.clone(), "payments");
    let started = std::time::Instant::now();
    let rotated = loop {
        let s = secrets
            .get("payments-api-injected")
            .await
            .map_err(|e| e.to_string())?;
        let d = deployments
            .get("payments-api")
            .await
            .map_err(|e| e.to_string())?;
        let restarted = d
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("secret-injector.io/restarted-at").cloned());
        let password = s
            .data
            .as_ref()
            .and_then(|d| d.get("DB_PASSWORD"))
            .map(|v| v.0.clone());
        if let (Some(at), Some(pw)) = (restarted, password) {
            if pw == b"demo-only-rotated-password" {
                break (at, s);
            }
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            return Err(
                "the rotation did not reach the Secret and the Deployment within 30s".into(),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    println!(
        "    after {:.1}s: secret/payments-api-injected DB_PASSWORD <redacted, {} bytes>, data-hmac {}",
        started.elapsed().as_secs_f32(),
        rotated.1.data.as_ref().and_then(|d| d.get("DB_PASSWORD")).map(|v| v.0.len()).unwrap_or(0),
        rotated.1.metadata.annotations.as_ref().and_then(|a| a.get("secret-injector.io/data-hmac")).cloned().unwrap_or_default()
    );
    println!(
        "    deployment/payments-api pod template: secret-injector.io/restarted-at={}",
        rotated.0
    );
    let metrics = webhook.metrics().await;
    for line in metrics.lines().filter(|l| {
        l.starts_with("secret_injector_refreshes_total")
            || l.starts_with("secret_injector_rollouts_total")
    }) {
        println!("    {line}");
    }

    let pg = dynamic_demo::dynamic_half(15, step, &bao, &standin, &webhook).await?;

    step(19, "Cleaning up");
    drop(pg);
    drop(webhook);
    drop(standin);
    drop(bao);
    drop(moto);
    println!("    webhook, API stand-in, OpenBao, moto and PostgreSQL stopped");
    Ok(())
}

/// The AWS half of the story: the fraud-feed token lives in AWS Secrets Manager, readable by
/// the payments ServiceAccount's IAM role (IRSA); one Deployment draws it together with the
/// Vault database credentials through the full form.
async fn aws_half(
    standin: &StandIn,
    client: &kube::Client,
    webhook: &Webhook,
) -> Result<Moto, String> {
    const REGION: &str = "eu-west-1";
    let role = Moto::role_arn("payments-api");
    let pp = PostParams::default();

    step(
        10,
        "Starting moto (AWS STS + Secrets Manager emulator) for the AWS half",
    );
    let moto = Moto::start().await;
    println!("    moto      {}", moto.url());

    step(
        11,
        "Security team: the fraud-feed token lives in Secrets Manager; IRSA maps the ServiceAccount to its IAM role",
    );
    moto.create_secret(
        REGION,
        "payments/fraud-feed",
        &json!({"api_key": "demo-only-feed-key", "endpoint": "https://fraud-feed.example/v2"})
            .to_string(),
    )
    .await;
    Api::<ServiceAccount>::namespaced(client.clone(), "payments")
        .patch(
            "payments-api",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"eks.amazonaws.com/role-arn": role}}}),
            ),
        )
        .await
        .map_err(|e| e.to_string())?;
    let store = json!({
        "apiVersion": "secret-injector.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "aws-secrets-manager", "namespace": "payments"},
        "spec": {"provider": {"aws": {"service": "SecretsManager", "region": REGION, "endpoint": moto.url()}}}
    });
    Api::<secret_injector::store::SecretStore>::namespaced(client.clone(), "payments")
        .create(&pp, &serde_json::from_value(store).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    println!("    secretsmanager payments/fraud-feed   {{api_key, endpoint}}  ({REGION})");
    println!("    serviceaccount/payments-api          eks.amazonaws.com/role-arn: {role}");
    println!(
        "    secretstore/aws-secrets-manager      → Secrets Manager {REGION} at {} (no role: the ServiceAccount's)",
        moto.url()
    );

    step(
        12,
        "App team: one Deployment, two stores — DB credentials from Vault, the fraud feed from AWS",
    );
    let items = r#"- name: payments-scorer-db
  storeRef: {name: vault-backend}
  data:
    - {secretKey: DB_USERNAME, remoteRef: {key: payments/db, property: username}}
    - {secretKey: DB_PASSWORD, remoteRef: {key: payments/db, property: password}}
- name: payments-scorer-fraud-feed
  storeRef: {name: aws-secrets-manager}
  dataFrom:
    - extract: {key: payments/fraud-feed}
  inject: {env: true, mountPath: /etc/fraud-feed}
"#;
    let annotations = json!({"secret-injector.io/external-secrets": items});
    for line in items.lines() {
        println!("    {line}");
    }
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "payments-scorer"},
        "spec": {"selector": {"matchLabels": {"app": "payments-scorer"}},
            "template": {"metadata": {"labels": {"app": "payments-scorer"}, "annotations": annotations},
                "spec": {"serviceAccountName": "payments-api", "containers": [{"name": "app", "image": "payments-scorer:1"}]}}}
    }))
    .unwrap();
    let deployment = Api::<Deployment>::namespaced(client.clone(), "payments")
        .create(&pp, &deployment)
        .await
        .map_err(|e| e.to_string())?;
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "payments-scorer-5f6d7c8b9", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "payments-scorer",
            "uid": deployment.metadata.uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"selector": {"matchLabels": {"app": "payments-scorer"}}}
    }))
    .unwrap();
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), "payments")
        .create(&pp, &rs)
        .await
        .map_err(|e| e.to_string())?;

    step(
        13,
        "Its pod goes through /mutate: two managed Secrets, one patch referencing both",
    );
    let tokens_before = standin.token_requests().len();
    let rs_uid = rs.metadata.uid.unwrap_or_default();
    let review = pod_review(
        "demo-0003",
        Some(("payments-scorer-5f6d7c8b9", &rs_uid)),
        "payments-api",
        annotations,
    );
    let (_, response) = webhook.mutate(&review).await;
    if response["allowed"] != true {
        return Err(format!(
            "the payments-scorer pod was denied: {}",
            response["status"]["message"]
        ));
    }
    let patch = decoded_patch(&response).ok_or("no patch in the response")?;
    println!("    allowed: true; JSONPatch:");
    for line in serde_json::to_string_pretty(&patch).unwrap().lines() {
        println!("      {line}");
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), "payments");
    for name in ["payments-scorer-db", "payments-scorer-fraud-feed"] {
        let secret = secrets.get(name).await.map_err(|e| e.to_string())?;
        let keys: Vec<String> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k} <redacted, {} bytes>", v.0.len()))
            .collect();
        println!("    secret/{name}: {}", keys.join(", "));
    }
    for t in &standin.token_requests()[tokens_before..] {
        println!(
            "    TokenRequest for {}/{} audience {:?}",
            t.namespace, t.service_account, t.audiences
        );
    }
    let metrics = webhook.metrics().await;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("secret_injector_backend_requests_total{provider=\"aws\""))
    {
        println!("    {line}");
    }
    Ok(moto)
}
