//! Database credentials: the harness, revocation, lease look-up/renewal and the minimal policy.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use test_rig::postgres::{Login, Postgres};

use crate::helpers::*;

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
