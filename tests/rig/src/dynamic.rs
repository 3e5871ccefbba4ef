//! The dynamic-secrets half of the payments scenario: the payments rig plus a real PostgreSQL
//! that OpenBao's database engine manages, a policy that lets the payments ServiceAccount issue,
//! renew and revoke `database/creds/payments-rw`, and helpers to look at leases.

use std::time::Duration;

use crate::payments::*;
use crate::postgres::{Login, Postgres};
use crate::webhook::Webhook;
use reqwest::Method;
use serde_json::{json, Value};

pub const ROLE: &str = "payments-rw";
pub const CREDS: &str = "database/creds/payments-rw";

pub struct DbRig {
    pub rig: Rig,
    pub pg: Postgres,
}

/// What the workload identity needs: issue, mint a lease-holder token, renew, revoke, look up.
pub fn dynamic_policy(with_orphan: bool) -> String {
    let orphan = if with_orphan {
        "path \"auth/token/create-orphan\" { capabilities = [\"update\"] }\n"
    } else {
        ""
    };
    format!(
        r#"{orphan}path "database/creds/{ROLE}" {{ capabilities = ["read"] }}
path "sys/leases/renew/database/creds/{ROLE}/*" {{ capabilities = ["update"] }}
path "sys/leases/revoke/database/creds/{ROLE}/*" {{ capabilities = ["update"] }}
path "sys/leases/lookup" {{ capabilities = ["update"] }}
"#
    )
}

pub async fn must(rig: &Rig, method: Method, path: &str, body: Value) -> Value {
    rig.bao
        .api(method.clone(), path, Some(body))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
}

impl DbRig {
    /// The payments rig, PostgreSQL, the database engine with role `payments-rw`
    /// (`default_ttl`/`max_ttl` in seconds), and the Kubernetes auth role `payments` re-created
    /// with the dynamic policy and a login-token TTL of `login_ttl` seconds.
    pub async fn start(default_ttl: u64, max_ttl: u64, login_ttl: u64) -> DbRig {
        let (rig, pg) = tokio::join!(Rig::start(), Postgres::start());
        must(
            &rig,
            Method::POST,
            "sys/mounts/database",
            json!({"type": "database"}),
        )
        .await;
        must(
            &rig,
            Method::POST,
            "database/config/pg",
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": pg.openbao_connection_url(),
                "username": pg.superuser(),
                "password": pg.superuser_password(),
                "allowed_roles": "*",
            }),
        )
        .await;
        must(
            &rig,
            Method::POST,
            &format!("database/roles/{ROLE}"),
            json!({
                "db_name": "pg",
                "creation_statements": [Postgres::creation_statement()],
                "default_ttl": default_ttl,
                "max_ttl": max_ttl,
            }),
        )
        .await;
        rig.bao
            .write_policy("payments-dynamic", &dynamic_policy(true))
            .await;
        rig.bao
            .write_policy("payments-dynamic-no-orphan", &dynamic_policy(false))
            .await;
        kubernetes_role(
            &rig,
            "payments",
            &["payments-read", "payments-dynamic"],
            login_ttl,
        )
        .await;
        DbRig { rig, pg }
    }

    /// Leases OpenBao holds under `database/creds/payments-rw/` (root LIST).
    pub async fn leases(&self) -> Vec<String> {
        match self
            .rig
            .bao
            .api(
                Method::from_bytes(b"LIST").unwrap(),
                &format!("sys/leases/lookup/{CREDS}/"),
                None,
            )
            .await
        {
            Ok(v) => v["data"]["keys"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            Err((404, _)) => Vec::new(),
            Err(e) => panic!("listing leases: {e:?}"),
        }
    }

    /// Whether OpenBao still knows `lease_id`.
    pub async fn lease_exists(&self, lease_id: &str) -> bool {
        self.rig
            .bao
            .api(
                Method::PUT,
                "sys/leases/lookup",
                Some(json!({ "lease_id": lease_id })),
            )
            .await
            .is_ok()
    }

    pub async fn login(&self, creds: &Creds) -> Login {
        self.pg.try_login(&creds.username, &creds.password).await
    }

    /// Poll until `creds` stop logging in; panics after `within`.
    pub async fn wait_refused(&self, creds: &Creds, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while self.login(creds).await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "credentials still log in after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// (Re)create Kubernetes auth role `name` for the payments ServiceAccount.
pub async fn kubernetes_role(rig: &Rig, name: &str, policies: &[&str], login_ttl: u64) {
    must(
        rig,
        Method::POST,
        &format!("auth/kubernetes/role/{name}"),
        json!({
            "bound_service_account_names": [SA],
            "bound_service_account_namespaces": [NS],
            "token_policies": policies,
            "token_ttl": login_ttl,
            "token_max_ttl": login_ttl,
            "audience": "vault",
        }),
    )
    .await;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub username: String,
    pub password: String,
}

pub fn secret(rig: &Rig, name: &str) -> Value {
    rig.standin
        .object("secrets", Some(NS), name)
        .unwrap_or_else(|| panic!("Secret {name}"))
}

pub fn creds(rig: &Rig, name: &str) -> Creds {
    let data = secret_data(&secret(rig, name));
    Creds {
        username: data["username"].clone(),
        password: data["password"].clone(),
    }
}

pub fn annotation(rig: &Rig, name: &str, key: &str) -> Option<String> {
    secret(rig, name)["metadata"]["annotations"][key]
        .as_str()
        .map(String::from)
}

pub fn lease_id(rig: &Rig, name: &str) -> String {
    annotation(rig, name, "secret-injector.io/lease-id").expect("lease-id annotation")
}

pub fn restarted_at(rig: &Rig, deployment: &str) -> Option<String> {
    rig.standin.object("deployments", Some(NS), deployment)?["spec"]["template"]["metadata"]
        ["annotations"]["secret-injector.io/restarted-at"]
        .as_str()
        .map(String::from)
}

pub const FAST: [&str; 8] = [
    "--min-refresh-interval",
    "1s",
    "--rollout-debounce",
    "1s",
    "--lease-duration",
    "3s",
    "--store-check-interval",
    "1m",
];

/// Admit one pod of `replicaset` with `annotations`; returns the response.
pub async fn admit(
    rig: &Rig,
    webhook: &Webhook,
    uid: &str,
    replicaset: &str,
    annotations: Value,
) -> Value {
    let rs_uid = rig.replicaset_uid(replicaset);
    let (body, response) = webhook
        .mutate(&pod_review(
            uid,
            Some((replicaset, &rs_uid)),
            SA,
            annotations,
        ))
        .await;
    assert_eq!(response["allowed"], true, "{body}");
    response
}

pub fn short_form() -> Value {
    json!({
        "secret-injector.io/store": "vault-backend",
        "secret-injector.io/dynamic": CREDS,
    })
}

pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
