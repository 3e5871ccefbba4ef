//! The dynamic half of `make demo`: database credentials Vault issues and revokes, one set per
//! workload, outliving the short login token, rotated by the refresher.

use std::time::Duration;

use k8s_standin::StandIn;
use reqwest::Method;
use serde_json::json;
use test_rig::openbao::OpenBao;
use test_rig::payments::{pod_review, secret_data};
use test_rig::postgres::Postgres;
use test_rig::webhook::Webhook;

async fn must(
    bao: &OpenBao,
    method: Method,
    path: &str,
    body: serde_json::Value,
) -> Result<(), String> {
    bao.api(method.clone(), path, Some(body))
        .await
        .map(|_| ())
        .map_err(|e| format!("{method} {path}: {e:?}"))
}

/// Steps `first`…: PostgreSQL + the database engine, a Deployment asking for
/// `database/creds/payments-rw`, two pods, one issuance, a real login.
pub async fn dynamic_half(
    first: u32,
    step: fn(u32, &str),
    bao: &OpenBao,
    standin: &StandIn,
    webhook: &Webhook,
) -> Result<Postgres, String> {
    step(
        first,
        "DBA: a throw-away PostgreSQL (password auth) managed by OpenBao's database engine",
    );
    let pg = Postgres::start().await;
    must(
        bao,
        Method::POST,
        "sys/mounts/database",
        json!({"type": "database"}),
    )
    .await?;
    must(
        bao,
        Method::POST,
        "database/config/pg",
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": pg.openbao_connection_url(),
            "username": pg.superuser(), "password": pg.superuser_password(), "allowed_roles": "*",
        }),
    )
    .await?;
    must(
        bao,
        Method::POST,
        "database/roles/payments-rw",
        json!({
            "db_name": "pg", "creation_statements": [Postgres::creation_statement()],
            "default_ttl": "1h", "max_ttl": "24h",
        }),
    )
    .await?;
    bao.write_policy(
        "payments-dynamic",
        r#"path "database/creds/payments-rw" { capabilities = ["read"] }
path "auth/token/create-orphan" { capabilities = ["update"] }
path "sys/leases/renew/database/creds/payments-rw/*" { capabilities = ["update"] }
path "sys/leases/revoke/database/creds/payments-rw/*" { capabilities = ["update"] }"#,
    )
    .await;
    // Login tokens of this role live 30 s: far shorter than the credentials' hour.
    must(bao, Method::POST, "auth/kubernetes/role/payments-dynamic", json!({
        "bound_service_account_names": ["payments-api"], "bound_service_account_namespaces": ["payments"],
        "token_policies": ["payments-dynamic"], "token_ttl": 30, "token_max_ttl": 30, "audience": "vault",
    })).await?;
    println!(
        "    PostgreSQL 127.0.0.1:{}; database/roles/payments-rw default_ttl 1h, max_ttl 24h",
        pg.port()
    );
    println!("    auth/kubernetes/role/payments-dynamic: login tokens live 30s");

    step(
        first + 1,
        "App team: a Deployment asking for database/creds/payments-rw (short form)",
    );
    standin.seed(json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "vault-dynamic", "namespace": "payments"},
        "spec": {"provider": {"vault": {"server": bao.addr(), "path": "secret", "version": "v2",
            "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "payments-dynamic", "audiences": ["vault"]}}}}}}));
    let deployment = standin.seed(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "ledger", "namespace": "payments"},
        "spec": {"selector": {"matchLabels": {"app": "ledger"}}, "template": {"metadata": {"labels": {"app": "ledger"}}, "spec": {"containers": [{"name": "app", "image": "ledger:1"}]}}}}));
    let rs = standin.seed(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "ledger-6b7c", "namespace": "payments", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "ledger", "uid": deployment["metadata"]["uid"], "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "ledger"}}}}));
    let rs_uid = rs["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let annotations = json!({"secret-injector.io/store": "vault-dynamic", "secret-injector.io/dynamic": "database/creds/payments-rw"});
    println!("    secret-injector.io/store: vault-dynamic\n    secret-injector.io/dynamic: database/creds/payments-rw");
    let (_, first_pod) = webhook
        .mutate(&pod_review(
            "demo-d1",
            Some(("ledger-6b7c", &rs_uid)),
            "payments-api",
            annotations.clone(),
        ))
        .await;
    let (_, second_pod) = webhook
        .mutate(&pod_review(
            "demo-d2",
            Some(("ledger-6b7c", &rs_uid)),
            "payments-api",
            annotations,
        ))
        .await;
    if first_pod["allowed"] != true || second_pod["allowed"] != true {
        return Err(format!(
            "dynamic pods not admitted: {first_pod} {second_pod}"
        ));
    }
    let leases = bao
        .api(
            Method::from_bytes(b"LIST").unwrap(),
            "sys/leases/lookup/database/creds/payments-rw/",
            None,
        )
        .await
        .map_err(|e| format!("listing leases: {e:?}"))?;
    let count = leases["data"]["keys"].as_array().map_or(0, Vec::len);
    println!("    two pods admitted; leases in OpenBao: {count} (one issuance per workload)");

    step(
        first + 2,
        "The managed Secret: credentials (redacted) and the lease it owns",
    );
    let secret = standin
        .object("secrets", Some("payments"), "ledger-injected")
        .ok_or("no managed Secret")?;
    let data = secret_data(&secret);
    for k in data.keys() {
        println!("    data.{k}: <redacted, {} bytes>", data[k].len());
    }
    for (k, v) in secret["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if k.starts_with("secret-injector.io/lease-") {
            println!("    {k}: {}", v.as_str().unwrap_or_default());
        }
    }
    step(
        first + 3,
        "After the 30s login token has expired, the credentials still log into PostgreSQL",
    );
    tokio::time::sleep(Duration::from_secs(32)).await;
    let login = pg.try_login(&data["username"], &data["password"]).await;
    if !login.is_ok() {
        return Err(format!(
            "the issued credentials no longer log in: {login:?}"
        ));
    }
    println!("    psql as the issued user: logged in — the lease hangs off an orphan lease-holder token, not the login token");
    Ok(pg)
}
