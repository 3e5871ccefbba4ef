//! What ties credentials to the token that read them, and what keeps them alive.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use test_rig::openbao::OpenBao;

use crate::helpers::*;

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
