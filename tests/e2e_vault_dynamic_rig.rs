//! The backend facts the dynamic-secrets feature (issue 10) rests on, proven with real components:
//! an OpenBao 2.7.2 dev server (tests/support/openbao.rs) and a throw-away PostgreSQL cluster with
//! password authentication (tests/support/postgres.rs). Nothing here runs the webhook; every
//! assertion is a fact about OpenBao/PostgreSQL that the design must respect, with a comment
//! saying why it matters.
//!
//! Findings (each encoded below):
//! - Database credentials die when the token that read them expires, even though the lease
//!   claims a longer TTL (`lease_duration` is the credential TTL, not the token's).
//! - Batch login tokens (`token_type=batch`) cap the lease at the token's remaining TTL; renewal
//!   cannot lift the cap. Orphan or not, they do not help.
//! - An orphan token only survives its *parent*; leases still die with the orphan itself. What
//!   helps: a short login token may mint a longer-lived orphan token through a token role with
//!   `orphan=true` (`update` on `auth/token/create/<role>`, no sudo) and read the credentials with
//!   that; they outlive the login token.
//! - `auth/token/create-orphan` needs no sudo in OpenBao 2.7.2 (plain `update`), while
//!   `auth/token/create` with `no_parent=true` does.
//! - A periodic login token (`token_period` on the JWT/Kubernetes auth role) kept alive with
//!   `auth/token/renew-self` keeps the credentials alive; once renewals stop they die.
//! - Lease renewal is capped by the role's `max_ttl`; a lease past its max TTL cannot be renewed.
//! - Minimal policy: `read` on `database/creds/<role>`, `update` on
//!   `sys/leases/renew/database/creds/<role>/*` and `sys/leases/revoke/database/creds/<role>/*`
//!   (path form, scoped to the role) and, for look-ups, `update` on `sys/leases/lookup`. The
//!   default policy alone already grants body-form `sys/leases/renew` and `sys/leases/lookup`
//!   for any lease id, never revoke.
//! - Kubernetes auth roles accept the same `token_type` / `token_period` /
//!   `token_explicit_max_ttl` / `token_no_default_policy` parameters as the JWT roles used here.
//! - PKI: `pki/issue/<role>` creates no lease unless the role sets `generate_lease`.

mod support;

#[path = "support/postgres.rs"]
mod postgres;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::{Login, Postgres};
use reqwest::Method;
use serde_json::{json, Value};
use support::openbao::OpenBao;

/// The database role most tests use.
const ROLE: &str = "app";
/// Short login-token TTL used to watch tokens expire (seconds).
const SHORT: u64 = 4;
/// `token_period` of the periodic login role (seconds).
const PERIOD: u64 = 5;

// ---------------------------------------------------------------------------------------------
// Rig helpers (candidates for tests/support once the feature lands)
// ---------------------------------------------------------------------------------------------

/// Start OpenBao and PostgreSQL side by side and wire OpenBao's database engine to the cluster:
/// `database/` mounted, connection `pg` (superuser login, scram), role `app` with
/// `VALID UNTIL '{{expiration}}'`, `default_ttl`/`max_ttl` as given (seconds).
async fn db_rig(default_ttl: u64, max_ttl: u64) -> (OpenBao, Postgres) {
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

async fn db_role(bao: &OpenBao, role: &str, default_ttl: u64, max_ttl: u64) {
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
struct Creds {
    username: String,
    password: String,
    lease_id: String,
    lease_duration: u64,
    renewable: bool,
}

/// `GET database/creds/<role>` with `token`.
async fn read_creds(bao: &OpenBao, token: &str, role: &str) -> Creds {
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

async fn login(pg: &Postgres, c: &Creds) -> Login {
    pg.try_login(&c.username, &c.password).await
}

/// Poll until the credentials stop logging in (OpenBao's expiration manager revokes a moment
/// after the deadline); panics if they still work after `within`.
async fn assert_dies_within(pg: &Postgres, c: &Creds, within: Duration, why: &str) {
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

async fn lease_lookup(bao: &OpenBao, token: &str, lease_id: &str) -> Result<Value, (u16, String)> {
    bao.api_with_token(
        Some(token),
        Method::PUT,
        "sys/leases/lookup",
        Some(json!({ "lease_id": lease_id })),
    )
    .await
}

/// Create a token with the root token (`auth/token/create` body as given); returns its `auth`.
async fn root_token_create(bao: &OpenBao, path: &str, body: Value) -> Value {
    must(bao, Method::POST, path, body).await["auth"].clone()
}

async fn must(bao: &OpenBao, method: Method, path: &str, body: Value) -> Value {
    bao.api(method.clone(), path, Some(body))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
}

async fn must_as(bao: &OpenBao, token: &str, method: Method, path: &str, body: Value) -> Value {
    bao.api_with_token(Some(token), method.clone(), path, Some(body))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
}

fn token_of(auth: &Value) -> String {
    auth["client_token"].as_str().expect("client_token").into()
}

/// What a workload identity needs to read credentials of `role`, and look up, renew and revoke
/// its lease — nothing else.
fn workload_policy(role: &str) -> String {
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
struct Jwt {
    key: jsonwebtoken::EncodingKey,
}

const ISSUER: &str = "https://issuer.example.test";
const SUBJECT: &str = "system:serviceaccount:payments:payments-api";

impl Jwt {
    async fn enable(bao: &OpenBao) -> Jwt {
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
    async fn role(&self, bao: &OpenBao, name: &str, token_params: Value) {
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
    async fn login(&self, bao: &OpenBao, name: &str) -> Value {
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

// ---------------------------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------------------------

/// Two clusters side by side, password auth enforced, and cleaned up on drop.
#[tokio::test]
async fn postgres_harness_is_isolated_password_only_and_cleans_up() {
    let (a, b) = tokio::join!(Postgres::start(), Postgres::start());
    assert_ne!(a.port(), b.port(), "parallel clusters need their own ports");
    assert_ne!(a.superuser_password(), b.superuser_password());

    assert_eq!(
        a.try_login("postgres", a.superuser_password()).await,
        Login::Ok("postgres".into())
    );
    // scram everywhere: a wrong password (or another cluster's) is refused, so a login proves a
    // password. No `trust` line exists.
    match a.try_login("postgres", "wrong").await {
        Login::Refused(msg) => assert!(msg.contains("password authentication failed"), "{msg}"),
        ok => panic!("wrong password accepted: {ok:?}"),
    }
    assert!(!a
        .try_login("postgres", b.superuser_password())
        .await
        .is_ok());
    let hba = a
        .superuser_sql("SELECT string_agg(DISTINCT auth_method, ',') FROM pg_hba_file_rules")
        .await
        .unwrap();
    assert_eq!(hba, "scram-sha-256", "pg_hba.conf auth methods");

    let dir = a.log_path().parent().unwrap().to_path_buf();
    let port = a.port();
    assert!(dir.exists());
    drop(a);
    assert!(!dir.exists(), "temp dir removed on drop");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server stopped on drop"
    );
    assert!(b
        .try_login("postgres", b.superuser_password())
        .await
        .is_ok());
}

// ---------------------------------------------------------------------------------------------
// Database credentials: issue, log in, revoke
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn database_creds_log_in_and_die_when_revoked() {
    let (bao, pg) = db_rig(3600, 7200).await;
    let root = bao.root_token();

    let c = read_creds(&bao, &root, ROLE).await;
    // OpenBao issues PostgreSQL credentials with a renewable lease of the role's default_ttl.
    assert_eq!(c.lease_duration, 3600);
    assert!(c.renewable);
    assert!(
        c.lease_id.starts_with("database/creds/app/"),
        "{}",
        c.lease_id
    );
    // A real password login as the issued user.
    assert_eq!(login(&pg, &c).await, Login::Ok(c.username.clone()));
    assert!(pg.role_exists(&c.username).await);
    // `VALID UNTIL '{{expiration}}'` is applied: PostgreSQL itself refuses after the lease.
    let valid_until = pg
        .superuser_sql(&format!(
            "SELECT rolvaliduntil IS NOT NULL FROM pg_roles WHERE rolname = '{}'",
            c.username
        ))
        .await
        .unwrap();
    assert_eq!(valid_until, "t");
    assert!(
        !pg.try_login(&c.username, "not-the-password").await.is_ok(),
        "password is checked"
    );

    // Two reads ⇒ two users, two leases (issuance is per read: the webhook must share one).
    let c2 = read_creds(&bao, &root, ROLE).await;
    assert_ne!(c.username, c2.username);
    assert_ne!(c.lease_id, c2.lease_id);

    // Revoke ⇒ the user is dropped at once and the lease is gone.
    must(
        &bao,
        Method::PUT,
        "sys/leases/revoke",
        json!({"lease_id": c.lease_id}),
    )
    .await;
    assert_dies_within(&pg, &c, Duration::from_secs(5), "revoked lease").await;
    assert!(!pg.role_exists(&c.username).await, "user dropped on revoke");
    let gone = lease_lookup(&bao, &root, &c.lease_id).await.unwrap_err();
    assert_eq!(gone.0, 400, "revoked lease lookup: {gone:?}");
    assert!(gone.1.contains("invalid lease"), "{gone:?}");
    // The other lease is untouched.
    assert!(login(&pg, &c2).await.is_ok());
}

// ---------------------------------------------------------------------------------------------
// The key design question: do credentials die with a short login token?
// ---------------------------------------------------------------------------------------------

/// A JWT/Kubernetes-auth login token with `token_ttl` shorter than the credential TTL: the
/// credentials die when the token expires, although their lease said 1h. `token_no_default_policy`
/// is honoured by the auth role.
#[tokio::test]
async fn creds_die_with_a_short_login_token() {
    let (bao, pg) = db_rig(3600, 7200).await;
    bao.write_policy("workload", &workload_policy(ROLE)).await;
    let jwt = Jwt::enable(&bao).await;
    jwt.role(
        &bao,
        "short",
        json!({"token_policies": ["workload"], "token_ttl": SHORT, "token_max_ttl": SHORT,
               "token_no_default_policy": true}),
    )
    .await;

    let auth = jwt.login(&bao, "short").await;
    assert_eq!(auth["lease_duration"], SHORT);
    assert_eq!(auth["policies"], json!(["workload"]), "no default policy");
    let token = token_of(&auth);
    let c = read_creds(&bao, &token, ROLE).await;
    // The lease claims the credential TTL, not the token's: it does not warn of the early death.
    assert_eq!(c.lease_duration, 3600);
    assert!(login(&pg, &c).await.is_ok());

    // Token expires ⇒ OpenBao revokes the leases it created ⇒ user dropped.
    assert_dies_within(
        &pg,
        &c,
        Duration::from_secs(SHORT + 10),
        "leases of an expired login token",
    )
    .await;
    assert!(!pg.role_exists(&c.username).await);
    assert_eq!(
        lease_lookup(&bao, &bao.root_token(), &c.lease_id)
            .await
            .unwrap_err()
            .0,
        400,
        "lease revoked with the token"
    );
}

/// (d) `token_type=batch` on the login role: batch tokens are accepted by JWT/Kubernetes auth
/// roles, but the leases they create are capped at the token's remaining TTL, renewal (even by
/// root) cannot lift the cap, and the credentials die when the token would have expired.
#[tokio::test]
async fn batch_login_tokens_cap_the_lease_at_their_ttl() {
    let (bao, pg) = db_rig(3600, 7200).await;
    bao.write_policy("workload", &workload_policy(ROLE)).await;
    let jwt = Jwt::enable(&bao).await;
    jwt.role(
        &bao,
        "batch",
        json!({"token_policies": ["workload"], "token_ttl": SHORT, "token_type": "batch"}),
    )
    .await;

    let auth = jwt.login(&bao, "batch").await;
    let token = token_of(&auth);
    let me = must_as(
        &bao,
        &token,
        Method::GET,
        "auth/token/lookup-self",
        json!({}),
    )
    .await;
    assert_eq!(me["data"]["type"], "batch");
    // Batch tokens from an auth login have no parent.
    assert_eq!(me["data"]["orphan"], true);
    assert_eq!(auth["renewable"], false, "batch tokens cannot be renewed");

    let c = read_creds(&bao, &token, ROLE).await;
    assert!(
        c.lease_duration <= SHORT,
        "lease capped at the batch token's TTL: {}",
        c.lease_duration
    );
    assert!(login(&pg, &c).await.is_ok());
    let renewed = must(
        &bao,
        Method::PUT,
        "sys/leases/renew",
        json!({"lease_id": c.lease_id, "increment": 3600}),
    )
    .await;
    assert!(
        renewed["lease_duration"].as_u64().unwrap() <= SHORT,
        "renewal stays capped by the batch token: {renewed}"
    );
    assert_dies_within(
        &pg,
        &c,
        Duration::from_secs(SHORT + 10),
        "leases of an expired batch token",
    )
    .await;
}

/// (a) Orphan tokens. An orphan only outlives its *parent*; its own leases still die with it. So a
/// short-lived orphan does not help — but a short login token may mint a *longer-lived* orphan
/// through a token role with `orphan=true` (non-root: `update` on `auth/token/create/<role>`), and
/// credentials read with that orphan outlive the login token. A plain child of the login token,
/// by contrast, is revoked with it.
#[tokio::test]
async fn orphan_token_from_a_token_role_outlives_the_login_token() {
    let (bao, pg) = db_rig(3600, 7200).await;
    bao.write_policy("workload", &workload_policy(ROLE)).await;
    bao.write_policy(
        "mint",
        r#"
path "auth/token/create/db-owner" { capabilities = ["update"] }
path "auth/token/create" { capabilities = ["update"] }
"#,
    )
    .await;
    must(
        &bao,
        Method::POST,
        "auth/token/roles/db-owner",
        json!({"allowed_policies": ["workload"], "orphan": true, "renewable": true,
               "token_explicit_max_ttl": 7200, "token_no_default_policy": true}),
    )
    .await;
    let jwt = Jwt::enable(&bao).await;
    jwt.role(
        &bao,
        "short",
        json!({"token_policies": ["workload", "mint"], "token_ttl": SHORT, "token_max_ttl": SHORT}),
    )
    .await;
    let login_token = token_of(&jwt.login(&bao, "short").await);

    // Long-lived orphan minted by the short login token, through the role (no sudo needed).
    let orphan = must_as(
        &bao,
        &login_token,
        Method::POST,
        "auth/token/create/db-owner",
        json!({"policies": ["workload"], "ttl": "1h"}),
    )
    .await["auth"]
        .clone();
    assert_eq!(orphan["orphan"], true);
    assert_eq!(orphan["policies"], json!(["workload"]));
    let kept = read_creds(&bao, &token_of(&orphan), ROLE).await;

    // Short orphan from the same role: dies with itself, orphan or not.
    let short_orphan = must_as(
        &bao,
        &login_token,
        Method::POST,
        "auth/token/create/db-owner",
        json!({"policies": ["workload"], "ttl": SHORT}),
    )
    .await["auth"]
        .clone();
    let dies_with_itself = read_creds(&bao, &token_of(&short_orphan), ROLE).await;

    // Ordinary (non-orphan) child of the login token, longer TTL: revoked with its parent.
    let child = must_as(
        &bao,
        &login_token,
        Method::POST,
        "auth/token/create",
        json!({"policies": ["workload"], "ttl": "1h"}),
    )
    .await["auth"]
        .clone();
    assert_eq!(child["orphan"], false);
    let dies_with_parent = read_creds(&bao, &token_of(&child), ROLE).await;
    let direct = read_creds(&bao, &login_token, ROLE).await;

    for c in [&kept, &dies_with_itself, &dies_with_parent, &direct] {
        assert!(login(&pg, c).await.is_ok());
    }
    let within = Duration::from_secs(SHORT + 10);
    assert_dies_within(&pg, &direct, within, "read by the login token").await;
    assert_dies_within(&pg, &dies_with_parent, within, "read by a child of it").await;
    assert_dies_within(&pg, &dies_with_itself, within, "read by a short orphan").await;
    // The login token is gone; the credentials of the long orphan still log in.
    let err = bao
        .api_with_token(
            Some(&login_token),
            Method::GET,
            "auth/token/lookup-self",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 403, "login token expired: {err:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        login(&pg, &kept).await.is_ok(),
        "credentials of the long-lived orphan outlive the login token"
    );
    assert!(lease_lookup(&bao, &bao.root_token(), &kept.lease_id)
        .await
        .is_ok());
}

/// (b) Creating orphans directly: `auth/token/create-orphan` is reachable for a non-root policy
/// with plain `update` (no sudo) in OpenBao 2.7.2, whereas `auth/token/create` with
/// `no_parent=true` demands root or sudo. Without the path in the policy: 403.
#[tokio::test]
async fn create_orphan_needs_no_sudo_but_no_parent_does() {
    let bao = OpenBao::start().await;
    bao.write_policy(
        "workload",
        "path \"secret/*\" { capabilities = [\"read\"] }",
    )
    .await;
    bao.write_policy(
        "orphan-maker",
        r#"
path "auth/token/create-orphan" { capabilities = ["update"] }
path "auth/token/create" { capabilities = ["update"] }
"#,
    )
    .await;
    let maker = root_token_create(
        &bao,
        "auth/token/create",
        json!({"policies": ["orphan-maker", "workload"], "ttl": "10m"}),
    )
    .await;
    let no_rights = root_token_create(
        &bao,
        "auth/token/create",
        json!({"policies": ["workload"], "ttl": "10m"}),
    )
    .await;

    let orphan = must_as(
        &bao,
        &token_of(&maker),
        Method::POST,
        "auth/token/create-orphan",
        json!({"policies": ["workload"], "ttl": "1h"}),
    )
    .await["auth"]
        .clone();
    assert_eq!(orphan["orphan"], true, "create-orphan works without sudo");

    let err = bao
        .api_with_token(
            Some(&token_of(&maker)),
            Method::POST,
            "auth/token/create",
            Some(json!({"policies": ["workload"], "no_parent": true})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 400, "{err:?}");
    assert!(
        err.1.contains("root or sudo privileges required"),
        "{err:?}"
    );

    let err = bao
        .api_with_token(
            Some(&token_of(&no_rights)),
            Method::POST,
            "auth/token/create-orphan",
            Some(json!({"policies": ["workload"]})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 403, "{err:?}");
    // Child policies must be a subset of the parent's.
    let err = bao
        .api_with_token(
            Some(&token_of(&maker)),
            Method::POST,
            "auth/token/create-orphan",
            Some(json!({"policies": ["root"]})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 400, "{err:?}");
}

/// (c) `token_period` on the login role: the login token is periodic; renewing it with
/// `auth/token/renew-self` before each period ends keeps its leases (the credentials) alive past
/// the period; once renewals stop, they die one period later. `token_explicit_max_ttl` caps even a
/// periodic token.
#[tokio::test]
async fn periodic_login_token_renewed_keeps_creds_alive() {
    let (bao, pg) = db_rig(3600, 7200).await;
    bao.write_policy("workload", &workload_policy(ROLE)).await;
    let jwt = Jwt::enable(&bao).await;
    jwt.role(
        &bao,
        "periodic",
        json!({"token_policies": ["workload"], "token_period": PERIOD}),
    )
    .await;
    jwt.role(
        &bao,
        "periodic-capped",
        json!({"token_policies": ["workload"], "token_period": PERIOD,
               "token_explicit_max_ttl": PERIOD + 2}),
    )
    .await;

    let auth = jwt.login(&bao, "periodic").await;
    assert_eq!(auth["lease_duration"], PERIOD);
    assert_eq!(auth["renewable"], true);
    let token = token_of(&auth);
    let me = must_as(
        &bao,
        &token,
        Method::GET,
        "auth/token/lookup-self",
        json!({}),
    )
    .await;
    assert_eq!(me["data"]["period"], PERIOD);
    // The default policy grants renew-self; the workload policy need not.
    assert!(me["data"]["policies"]
        .as_array()
        .unwrap()
        .contains(&json!("default")));

    let capped = token_of(&jwt.login(&bao, "periodic-capped").await);
    let c = read_creds(&bao, &token, ROLE).await;
    let c_capped = read_creds(&bao, &capped, ROLE).await;

    // Renew both every second for 3 periods.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3 * PERIOD) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = must_as(
            &bao,
            &token,
            Method::POST,
            "auth/token/renew-self",
            json!({}),
        )
        .await;
        assert_eq!(r["auth"]["lease_duration"], PERIOD, "a period per renewal");
        // The capped token: renewal granted at most up to its explicit max TTL, then refused.
        let _ = bao
            .api_with_token(
                Some(&capped),
                Method::POST,
                "auth/token/renew-self",
                Some(json!({})),
            )
            .await;
    }
    assert!(
        login(&pg, &c).await.is_ok(),
        "renewed periodic token: credentials alive after 3 periods"
    );
    assert!(
        !login(&pg, &c_capped).await.is_ok(),
        "token_explicit_max_ttl ends even a renewed periodic token and its leases"
    );

    // Stop renewing: gone one period later.
    assert_dies_within(
        &pg,
        &c,
        Duration::from_secs(PERIOD + 10),
        "periodic token no longer renewed",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Lease lookup / renew / revoke semantics and the minimal policy
// ---------------------------------------------------------------------------------------------

/// `sys/leases/lookup` and `sys/leases/renew` on a database lease; the increment is capped by the
/// role's `max_ttl` (measured from issue), with a warning; a lease past its max TTL is gone and
/// cannot be renewed.
#[tokio::test]
async fn lease_lookup_and_renew_are_capped_by_max_ttl() {
    let (bao, pg) = db_rig(3600, 7200).await;
    db_role(&bao, "brief", 3, 6).await;
    let root = bao.root_token();
    let c = read_creds(&bao, &root, ROLE).await;

    let l = lease_lookup(&bao, &root, &c.lease_id).await.unwrap()["data"].clone();
    assert_eq!(l["id"], c.lease_id);
    assert_eq!(l["renewable"], true);
    assert!(l["last_renewal"].is_null());
    let ttl = l["ttl"].as_u64().unwrap();
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");
    for field in ["issue_time", "expire_time"] {
        assert!(
            l[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}: {l}"
        );
    }

    // Increment within max_ttl: granted as asked.
    let r = must(
        &bao,
        Method::PUT,
        "sys/leases/renew",
        json!({"lease_id": c.lease_id, "increment": 5400}),
    )
    .await;
    assert_eq!(r["lease_id"], c.lease_id, "renewal keeps the lease id");
    assert_eq!(r["lease_duration"], 5400);
    assert!(r["renewable"].as_bool().unwrap());
    let l = lease_lookup(&bao, &root, &c.lease_id).await.unwrap()["data"].clone();
    assert!(l["last_renewal"].is_string(), "{l}");
    // Past max_ttl: capped to what remains of max_ttl since issue, with a warning.
    let r = must(
        &bao,
        Method::PUT,
        "sys/leases/renew",
        json!({"lease_id": c.lease_id, "increment": 3 * 3600}),
    )
    .await;
    let granted = r["lease_duration"].as_u64().unwrap();
    assert!((7190..=7200).contains(&granted), "capped: {granted}");
    assert!(r["warnings"].to_string().contains("max_ttl"), "{r}");
    // Renewal does not change the credentials.
    assert!(login(&pg, &c).await.is_ok());

    // A 6s-max lease: renewal near the end is capped to the remainder; after max_ttl it is gone.
    let b = read_creds(&bao, &root, "brief").await;
    assert_eq!(b.lease_duration, 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = must(
        &bao,
        Method::PUT,
        "sys/leases/renew",
        json!({"lease_id": b.lease_id, "increment": 60}),
    )
    .await;
    assert!(r["lease_duration"].as_u64().unwrap() <= 4, "{r}");
    assert_dies_within(&pg, &b, Duration::from_secs(15), "lease past max_ttl").await;
    let err = bao
        .api(
            Method::PUT,
            "sys/leases/renew",
            Some(json!({"lease_id": b.lease_id, "increment": 60})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 400, "a lapsed lease cannot be renewed: {err:?}");
}

/// The minimal workload policy (see [`workload_policy`]) on a token without the default policy:
/// it reads credentials, looks up, renews and revokes its own lease, and can do none of that for
/// another role's lease. Without it, the default policy alone still grants `sys/leases/renew` and
/// `sys/leases/lookup` (body form, any lease) but never revoke.
#[tokio::test]
async fn minimal_policy_reads_renews_and_revokes_its_own_lease() {
    let (bao, pg) = db_rig(3600, 7200).await;
    db_role(&bao, "other", 3600, 7200).await;
    bao.write_policy("workload", &workload_policy(ROLE)).await;
    bao.write_policy(
        "read-only",
        &format!("path \"database/creds/{ROLE}\" {{ capabilities = [\"read\"] }}"),
    )
    .await;
    let root = bao.root_token();
    let token = token_of(
        &root_token_create(
            &bao,
            "auth/token/create",
            json!({"policies": ["workload"], "no_default_policy": true, "ttl": "1h"}),
        )
        .await,
    );

    let c = read_creds(&bao, &token, ROLE).await;
    assert!(login(&pg, &c).await.is_ok());
    // Other roles' credentials: denied.
    let err = bao
        .api_with_token(Some(&token), Method::GET, "database/creds/other", None)
        .await
        .unwrap_err();
    assert_eq!(err.0, 403);

    // Lookup (body form).
    let l = lease_lookup(&bao, &token, &c.lease_id)
        .await
        .expect("lookup");
    assert_eq!(l["data"]["id"], c.lease_id);
    // Renew and revoke: the path form `sys/leases/<op>/<lease_id>` is what the scoped policy
    // allows; the body form is `sys/leases/<op>` and is denied by it.
    let renew_path = format!("sys/leases/renew/{}", c.lease_id);
    let r = must_as(
        &bao,
        &token,
        Method::PUT,
        &renew_path,
        json!({"increment": 600}),
    )
    .await;
    assert_eq!(r["lease_duration"], 600);
    let err = bao
        .api_with_token(
            Some(&token),
            Method::PUT,
            "sys/leases/renew",
            Some(json!({"lease_id": c.lease_id})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 403, "body form not in the scoped policy: {err:?}");

    // Another role's lease: the scoped policy refuses renew and revoke.
    let o = read_creds(&bao, &root, "other").await;
    for op in ["renew", "revoke"] {
        let err = bao
            .api_with_token(
                Some(&token),
                Method::PUT,
                &format!("sys/leases/{op}/{}", o.lease_id),
                Some(json!({})),
            )
            .await
            .unwrap_err();
        assert_eq!(err.0, 403, "{op} of another role's lease: {err:?}");
    }
    assert!(login(&pg, &o).await.is_ok());

    // Revoke its own lease ⇒ user dropped.
    must_as(
        &bao,
        &token,
        Method::PUT,
        &format!("sys/leases/revoke/{}", c.lease_id),
        json!({}),
    )
    .await;
    assert_dies_within(&pg, &c, Duration::from_secs(5), "revoked by the workload").await;

    // Read-only + default policy: the default policy already grants renew and lookup (body
    // form, for ANY lease id it is given), never revoke.
    let with_default = token_of(
        &root_token_create(
            &bao,
            "auth/token/create",
            json!({"policies": ["read-only"], "ttl": "1h"}),
        )
        .await,
    );
    let d = read_creds(&bao, &with_default, ROLE).await;
    assert!(lease_lookup(&bao, &with_default, &d.lease_id).await.is_ok());
    must_as(
        &bao,
        &with_default,
        Method::PUT,
        "sys/leases/renew",
        json!({"lease_id": o.lease_id, "increment": 600}),
    )
    .await;
    let err = bao
        .api_with_token(
            Some(&with_default),
            Method::PUT,
            "sys/leases/revoke",
            Some(json!({"lease_id": d.lease_id})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 403, "revoke is never in the default policy: {err:?}");

    // Read-only without default policy: neither lookup nor renew.
    let bare = token_of(
        &root_token_create(
            &bao,
            "auth/token/create",
            json!({"policies": ["read-only"], "no_default_policy": true, "ttl": "1h"}),
        )
        .await,
    );
    let e = read_creds(&bao, &bare, ROLE).await;
    assert_eq!(
        lease_lookup(&bao, &bare, &e.lease_id).await.unwrap_err().0,
        403
    );
    let err = bao
        .api_with_token(
            Some(&bare),
            Method::PUT,
            "sys/leases/renew",
            Some(json!({"lease_id": e.lease_id})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 403, "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------------------------

/// `pki/issue/<role>` with common_name + ttl ⇒ a certificate that `openssl verify` accepts
/// against the issuing CA, with that CN and lifetime; no lease unless the role sets
/// `generate_lease` (then a revocable lease under `pki/issue/<role>/`).
#[tokio::test]
async fn pki_issue_verifies_against_the_ca_and_has_no_lease_by_default() {
    let bao = OpenBao::start().await;
    must(&bao, Method::POST, "sys/mounts/pki", json!({"type": "pki"})).await;
    must(
        &bao,
        Method::POST,
        "sys/mounts/pki/tune",
        json!({"max_lease_ttl": "87600h"}),
    )
    .await;
    let root_ca = must(
        &bao,
        Method::POST,
        "pki/root/generate/internal",
        json!({"common_name": "Payments Test Root CA", "ttl": "8760h"}),
    )
    .await;
    let ca_pem = root_ca["data"]["certificate"].as_str().unwrap().to_string();
    for (role, lease) in [("web", false), ("web-leased", true)] {
        must(
            &bao,
            Method::POST,
            &format!("pki/roles/{role}"),
            json!({"allowed_domains": ["payments.svc"], "allow_subdomains": true,
                   "max_ttl": "72h", "generate_lease": lease}),
        )
        .await;
    }

    let issued = must(
        &bao,
        Method::POST,
        "pki/issue/web",
        json!({"common_name": "api.payments.svc", "ttl": "1h"}),
    )
    .await;
    let d = &issued["data"];
    for field in [
        "certificate",
        "private_key",
        "issuing_ca",
        "serial_number",
        "expiration",
    ] {
        assert!(!d[field].is_null(), "{field} missing: {issued}");
    }
    assert_eq!(d["issuing_ca"].as_str().unwrap().trim(), ca_pem.trim());
    // No lease: empty lease_id, zero duration. Renewal is re-issue; revocation is pki/revoke.
    assert_eq!(issued["lease_id"], "", "{issued}");
    assert_eq!(issued["lease_duration"], 0);

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let crt = dir.path().join("tls.crt");
    std::fs::write(&ca, &ca_pem).unwrap();
    std::fs::write(&crt, d["certificate"].as_str().unwrap()).unwrap();
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("run openssl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = openssl(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        ca.as_os_str(),
        crt.as_os_str(),
    ]);
    assert!(ok, "openssl verify: {out}");
    let (ok, out) = openssl(&[
        "x509".as_ref(),
        "-noout".as_ref(),
        "-subject".as_ref(),
        "-in".as_ref(),
        crt.as_os_str(),
    ]);
    assert!(ok && out.contains("CN = api.payments.svc"), "{out}");
    let ttl = d["expiration"].as_i64().unwrap()
        - SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
    assert!((3500..=3600).contains(&ttl), "requested 1h, got {ttl}s");
    // A foreign CA does not verify it.
    let other = OpenBao::start().await;
    must(
        &other,
        Method::POST,
        "sys/mounts/pki",
        json!({"type": "pki"}),
    )
    .await;
    let foreign = must(
        &other,
        Method::POST,
        "pki/root/generate/internal",
        json!({"common_name": "Payments Test Root CA", "ttl": "8760h"}),
    )
    .await;
    let foreign_ca = dir.path().join("foreign.pem");
    std::fs::write(
        &foreign_ca,
        foreign["data"]["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let (ok, _) = openssl(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        foreign_ca.as_os_str(),
        crt.as_os_str(),
    ]);
    assert!(
        !ok,
        "a foreign CA with the same name must not verify the certificate"
    );
    // A name outside the role: refused.
    let err = bao
        .api(
            Method::POST,
            "pki/issue/web",
            Some(json!({"common_name": "evil.example.com"})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 400, "{err:?}");

    // generate_lease=true: a lease under pki/issue/<role>/, revocable through sys/leases.
    let leased = must(
        &bao,
        Method::POST,
        "pki/issue/web-leased",
        json!({"common_name": "db.payments.svc", "ttl": "1h"}),
    )
    .await;
    let lease_id = leased["lease_id"].as_str().unwrap().to_string();
    assert!(lease_id.starts_with("pki/issue/web-leased/"), "{leased}");
    assert!(leased["lease_duration"].as_u64().unwrap() > 3500);
    let serial = leased["data"]["serial_number"]
        .as_str()
        .unwrap()
        .to_string();
    must(
        &bao,
        Method::PUT,
        "sys/leases/revoke",
        json!({"lease_id": lease_id}),
    )
    .await;
    let cert = must(&bao, Method::GET, &format!("pki/cert/{serial}"), json!({})).await;
    assert!(
        cert["data"]["revocation_time"].as_i64().unwrap_or(0) > 0,
        "revoking the lease revokes the certificate: {cert}"
    );
}

/// rsa 0.9 wants a rand_core 0.6 RNG; adapt rand 0.9's thread RNG.
struct Rng09(rand::rngs::ThreadRng);

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

/// The Kubernetes auth method takes the same `token_*` role parameters the JWT tests above
/// exercise (OpenBao's shared token fields): `token_type=batch`, `token_period`,
/// `token_explicit_max_ttl`, `token_no_default_policy` are accepted and read back, so each
/// finding above applies to Kubernetes-auth logins too. An unknown `token_type` is refused.
#[tokio::test]
async fn kubernetes_auth_roles_accept_the_token_lifetime_parameters() {
    let bao = OpenBao::start().await;
    bao.enable_kubernetes_auth("kubernetes", "http://127.0.0.1:9", "reviewer-jwt")
        .await;
    for (role, params) in [
        (
            "periodic",
            json!({"token_period": 3600, "token_explicit_max_ttl": 86400,
                   "token_no_default_policy": true}),
        ),
        ("batch", json!({"token_type": "batch", "token_ttl": 900})),
    ] {
        let mut body = json!({
            "bound_service_account_names": ["payments-api"],
            "bound_service_account_namespaces": ["payments"],
            "token_policies": ["workload"],
        });
        body.as_object_mut()
            .unwrap()
            .extend(params.as_object().unwrap().clone());
        must(
            &bao,
            Method::POST,
            &format!("auth/kubernetes/role/{role}"),
            body,
        )
        .await;
        let back = bao
            .api(Method::GET, &format!("auth/kubernetes/role/{role}"), None)
            .await
            .unwrap()["data"]
            .clone();
        for (k, v) in params.as_object().unwrap() {
            assert_eq!(&back[k], v, "{role}.{k}: {back}");
        }
    }
    let err = bao
        .api(
            Method::POST,
            "auth/kubernetes/role/bad",
            Some(json!({"bound_service_account_names": ["a"],
                        "bound_service_account_namespaces": ["b"],
                        "token_type": "forever"})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 400, "{err:?}");
}
