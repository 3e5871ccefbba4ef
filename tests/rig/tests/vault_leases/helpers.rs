//! Rig helpers shared by the lease tests: OpenBao + PostgreSQL wiring, credential reads,
//! token creation and a real JWT auth method.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{json, Value};
use test_rig::openbao::OpenBao;
use test_rig::postgres::{Login, Postgres};

/// The database role most tests use.
pub(crate) const ROLE: &str = "app";
/// Short login-token TTL used to watch tokens expire (seconds).
pub(crate) const SHORT: u64 = 4;
/// `token_period` of the periodic login role (seconds).
pub(crate) const PERIOD: u64 = 5;

// ---------------------------------------------------------------------------------------------
// Rig helpers
// ---------------------------------------------------------------------------------------------

/// Start OpenBao and PostgreSQL side by side and wire OpenBao's database engine to the cluster:
/// `database/` mounted, connection `pg` (superuser login, scram), role `app` with
/// `VALID UNTIL '{{expiration}}'`, `default_ttl`/`max_ttl` as given (seconds).
pub(crate) async fn db_rig(default_ttl: u64, max_ttl: u64) -> (OpenBao, Postgres) {
    let (bao, pg) = tokio::join!(OpenBao::start(), Postgres::start());
    must(
        &bao,
        Method::POST,
        "sys/mounts/database",
        json!({"type": "database"}),
    )
    .await;
    must(
        &bao,
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
    db_role(&bao, ROLE, default_ttl, max_ttl).await;
    (bao, pg)
}

pub(crate) async fn db_role(bao: &OpenBao, role: &str, default_ttl: u64, max_ttl: u64) {
    must(
        bao,
        Method::POST,
        &format!("database/roles/{role}"),
        json!({
            "db_name": "pg",
            "creation_statements": [Postgres::creation_statement()],
            "default_ttl": default_ttl,
            "max_ttl": max_ttl,
        }),
    )
    .await;
}

#[derive(Debug, Clone)]
pub(crate) struct Creds {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) lease_id: String,
    pub(crate) lease_duration: u64,
    pub(crate) renewable: bool,
}

/// `GET database/creds/<role>` with `token`.
pub(crate) async fn read_creds(bao: &OpenBao, token: &str, role: &str) -> Creds {
    let v = bao
        .api_with_token(
            Some(token),
            Method::GET,
            &format!("database/creds/{role}"),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("read database/creds/{role}: {e:?}"));
    Creds {
        username: v["data"]["username"].as_str().expect("username").into(),
        password: v["data"]["password"].as_str().expect("password").into(),
        lease_id: v["lease_id"].as_str().expect("lease_id").into(),
        lease_duration: v["lease_duration"].as_u64().expect("lease_duration"),
        renewable: v["renewable"].as_bool().expect("renewable"),
    }
}

pub(crate) async fn login(pg: &Postgres, c: &Creds) -> Login {
    pg.try_login(&c.username, &c.password).await
}

/// Poll until the credentials stop logging in (OpenBao's expiration manager revokes a moment
/// after the deadline); panics if they still work after `within`.
pub(crate) async fn assert_dies_within(pg: &Postgres, c: &Creds, within: Duration, why: &str) {
    let deadline = Instant::now() + within;
    loop {
        if let Login::Refused(msg) = login(pg, c).await {
            // The server is up and refuses the user: its password no longer works, or the role
            // is gone (dropped before, or while, the login looked it up).
            assert!(
                msg.contains("password authentication failed")
                    || msg.contains("does not exist")
                    || msg.contains("invalid role OID"),
                "{why}: unexpected refusal: {msg}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{why}: credentials still log in after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) async fn lease_lookup(
    bao: &OpenBao,
    token: &str,
    lease_id: &str,
) -> Result<Value, (u16, String)> {
    bao.api_with_token(
        Some(token),
        Method::PUT,
        "sys/leases/lookup",
        Some(json!({ "lease_id": lease_id })),
    )
    .await
}

/// Create a token with the root token (`auth/token/create` body as given); returns its `auth`.
pub(crate) async fn root_token_create(bao: &OpenBao, path: &str, body: Value) -> Value {
    must(bao, Method::POST, path, body).await["auth"].clone()
}

pub(crate) async fn must(bao: &OpenBao, method: Method, path: &str, body: Value) -> Value {
    bao.api(method.clone(), path, Some(body))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
}

pub(crate) async fn must_as(
    bao: &OpenBao,
    token: &str,
    method: Method,
    path: &str,
    body: Value,
) -> Value {
    bao.api_with_token(Some(token), method.clone(), path, Some(body))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
}

pub(crate) fn token_of(auth: &Value) -> String {
    auth["client_token"].as_str().expect("client_token").into()
}

/// What a workload identity needs to read credentials of `role`, and look up, renew and revoke
/// its lease — nothing else.
pub(crate) fn workload_policy(role: &str) -> String {
    format!(
        r#"
path "database/creds/{role}" {{ capabilities = ["read"] }}
path "sys/leases/renew/database/creds/{role}/*" {{ capabilities = ["update"] }}
path "sys/leases/revoke/database/creds/{role}/*" {{ capabilities = ["update"] }}
path "sys/leases/lookup" {{ capabilities = ["update"] }}
"#
    )
}

/// A JWT auth method (the Kubernetes-auth stand-in for login semantics: both issue tokens from
/// the same `token_*` role parameters) with a locally generated signing key.
pub(crate) struct Jwt {
    pub(crate) key: jsonwebtoken::EncodingKey,
}

pub(crate) const ISSUER: &str = "https://issuer.example.test";
pub(crate) const SUBJECT: &str = "system:serviceaccount:payments:payments-api";

impl Jwt {
    pub(crate) async fn enable(bao: &OpenBao) -> Jwt {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut Rng09(rand::rng()), 2048).expect("RSA key");
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let private_pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        bao.enable_jwt_auth("jwt", ISSUER, &public_pem).await;
        Jwt {
            key: jsonwebtoken::EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
        }
    }

    /// Create JWT role `name` bound to the payments ServiceAccount, with extra `token_*` params.
    pub(crate) async fn role(&self, bao: &OpenBao, name: &str, token_params: Value) {
        let mut body = json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_subject": SUBJECT,
            "bound_audiences": ["vault"],
        });
        body.as_object_mut()
            .unwrap()
            .extend(token_params.as_object().unwrap().clone());
        must(bao, Method::POST, &format!("auth/jwt/role/{name}"), body).await;
    }

    /// Log in with role `name`; returns the `auth` block.
    pub(crate) async fn login(&self, bao: &OpenBao, name: &str) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"iss": ISSUER, "sub": SUBJECT, "aud": ["vault"], "iat": now, "nbf": now, "exp": now + 600});
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &self.key,
        )
        .unwrap();
        bao.login("jwt", name, &jwt)
            .await
            .unwrap_or_else(|e| panic!("JWT login with role {name}: {e:?}"))["auth"]
            .clone()
    }
}

/// rsa 0.9 wants a rand_core 0.6 RNG; adapt rand 0.9's thread RNG.
pub(crate) struct Rng09(pub(crate) rand::rngs::ThreadRng);

impl rsa::rand_core::RngCore for Rng09 {
    fn next_u32(&mut self) -> u32 {
        rand::RngCore::next_u32(&mut self.0)
    }
    fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::RngCore::fill_bytes(&mut self.0, dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        rand::RngCore::fill_bytes(&mut self.0, dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for Rng09 {}
