//! Checks that the OpenBao test harness (src/openbao.rs) drives a real server the way
//! the other tests assume. Kubernetes-auth logins need the Kubernetes stand-in and are exercised
//! elsewhere; here the Kubernetes auth method is only configured and read back.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::json;
use test_rig::openbao::OpenBao;

#[tokio::test]
async fn starts_on_loopback_with_random_root_token() {
    let bao = OpenBao::start().await;
    let addr = bao.addr();
    assert!(addr.starts_with("http://127.0.0.1:"), "addr: {addr}");
    assert_ne!(
        addr, "http://127.0.0.1:8200",
        "must not use the default port"
    );
    assert!(bao.root_token().len() >= 20);

    let other = OpenBao::start().await;
    assert_ne!(bao.addr(), other.addr());
    assert_ne!(bao.root_token(), other.root_token());

    // The root token is accepted; another server's is not; no token at all is not.
    let me = bao
        .api(Method::GET, "auth/token/lookup-self", None)
        .await
        .expect("lookup-self with root token");
    assert_eq!(me["data"]["policies"], json!(["root"]));
    let err = bao
        .api_with_token(
            Some(&other.root_token()),
            Method::GET,
            "auth/token/lookup-self",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 403, "{err:?}");
    let err = bao
        .api_with_token(None, Method::GET, "sys/mounts", None)
        .await
        .unwrap_err();
    assert_eq!(err.0, 403, "{err:?}");
    assert_eq!(bao.health().await, Ok(200));
}

#[tokio::test]
async fn kv_v1_and_v2_round_trip() {
    let bao = OpenBao::start().await;

    bao.enable_kv("kv1", 1).await;
    bao.enable_kv("kv2", 2).await;
    let mounts = bao.api(Method::GET, "sys/mounts", None).await.unwrap();
    assert_eq!(mounts["data"]["kv1/"]["type"], "kv");
    assert_eq!(mounts["data"]["kv1/"]["options"]["version"], "1");
    assert_eq!(mounts["data"]["kv2/"]["type"], "kv");
    assert_eq!(mounts["data"]["kv2/"]["options"]["version"], "2");

    // v1: written at <mount>/<path>, read back as `data`.
    bao.kv_put(
        "kv1",
        1,
        "payments/db",
        json!({"username": "app", "password": "s3cret"}),
    )
    .await;
    let v1 = bao.api(Method::GET, "kv1/payments/db", None).await.unwrap();
    assert_eq!(v1["data"], json!({"username": "app", "password": "s3cret"}));
    assert_eq!(
        bao.kv_get("kv1", 1, "payments/db").await,
        Some(json!({"username": "app", "password": "s3cret"}))
    );

    // v2: written at <mount>/data/<path>, versioned.
    bao.kv_put("kv2", 2, "payments/db", json!({"password": "one"}))
        .await;
    bao.kv_put("kv2", 2, "payments/db", json!({"password": "two"}))
        .await;
    let v2 = bao
        .api(Method::GET, "kv2/data/payments/db", None)
        .await
        .unwrap();
    assert_eq!(v2["data"]["data"], json!({"password": "two"}));
    assert_eq!(v2["data"]["metadata"]["version"], 2);
    let v2_first = bao
        .api(Method::GET, "kv2/data/payments/db?version=1", None)
        .await
        .unwrap();
    assert_eq!(v2_first["data"]["data"], json!({"password": "one"}));

    // Re-enabling the same engine and version keeps the data.
    bao.enable_kv("kv2", 2).await;
    assert_eq!(
        bao.kv_get("kv2", 2, "payments/db").await,
        Some(json!({"password": "two"}))
    );

    // Delete: v2 removes every version (metadata gone), v1 removes the entry.
    bao.kv_delete("kv2", 2, "payments/db").await;
    let err = bao
        .api(Method::GET, "kv2/data/payments/db", None)
        .await
        .unwrap_err();
    assert_eq!(err.0, 404, "{err:?}");
    let err = bao
        .api(Method::GET, "kv2/metadata/payments/db", None)
        .await
        .unwrap_err();
    assert_eq!(err.0, 404, "{err:?}");
    assert_eq!(bao.kv_get("kv2", 2, "payments/db").await, None);
    bao.kv_delete("kv1", 1, "payments/db").await;
    assert_eq!(bao.kv_get("kv1", 1, "payments/db").await, None);

    // The dev server's default `secret/` (KV v2) can be re-mounted as v1 and back.
    bao.enable_kv("secret", 1).await;
    bao.kv_put("secret", 1, "a", json!({"k": "v1"})).await;
    assert_eq!(
        bao.api(Method::GET, "secret/a", None).await.unwrap()["data"],
        json!({"k": "v1"})
    );
    bao.enable_kv("secret", 2).await;
    bao.kv_put("secret", 2, "a", json!({"k": "v2"})).await;
    assert_eq!(
        bao.api(Method::GET, "secret/data/a", None).await.unwrap()["data"]["data"],
        json!({"k": "v2"})
    );

    // 204 answers come back as Null.
    let deleted = bao
        .api(Method::DELETE, "secret/metadata/a", None)
        .await
        .unwrap();
    assert!(deleted.is_null(), "{deleted}");
}

#[tokio::test]
async fn policy_and_kubernetes_auth_configuration() {
    let bao = OpenBao::start().await;

    let hcl = "path \"secret/data/payments/*\" {\n  capabilities = [\"read\"]\n}\n";
    bao.write_policy("payments-read", hcl).await;
    let policy = bao
        .api(Method::GET, "sys/policies/acl/payments-read", None)
        .await
        .unwrap();
    assert_eq!(policy["data"]["policy"], hcl);

    bao.enable_kubernetes_auth("kubernetes", "http://127.0.0.1:9", "reviewer.jwt.token")
        .await;
    let auths = bao.api(Method::GET, "sys/auth", None).await.unwrap();
    assert_eq!(auths["data"]["kubernetes/"]["type"], "kubernetes");
    let config = bao
        .api(Method::GET, "auth/kubernetes/config", None)
        .await
        .unwrap();
    assert_eq!(config["data"]["kubernetes_host"], "http://127.0.0.1:9");
    assert_eq!(config["data"]["disable_local_ca_jwt"], true);
    // The reviewer JWT is write-only; the server only says it has one.
    assert_eq!(config["data"]["token_reviewer_jwt_set"], true);
    assert!(config["data"]["kubernetes_ca_cert"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));

    bao.kubernetes_role(
        "kubernetes",
        "payments",
        &["payments-api", "payments-worker"],
        &["payments"],
        &["payments-read"],
        Some("vault"),
    )
    .await;
    let role = bao
        .api(Method::GET, "auth/kubernetes/role/payments", None)
        .await
        .unwrap();
    assert_eq!(
        role["data"]["bound_service_account_names"],
        json!(["payments-api", "payments-worker"])
    );
    assert_eq!(
        role["data"]["bound_service_account_namespaces"],
        json!(["payments"])
    );
    assert_eq!(role["data"]["token_policies"], json!(["payments-read"]));
    assert_eq!(role["data"]["token_ttl"], 20 * 60);
    assert_eq!(role["data"]["audience"], "vault");

    // A second mount, role without an audience.
    bao.enable_kubernetes_auth("k8s-other", "http://127.0.0.1:9", "reviewer.jwt.token")
        .await;
    bao.kubernetes_role("k8s-other", "any", &["*"], &["*"], &["default"], None)
        .await;
    let role = bao
        .api(Method::GET, "auth/k8s-other/role/any", None)
        .await
        .unwrap();
    let audience = &role["data"]["audience"];
    assert!(
        audience.is_null() || audience == "",
        "no audience bound: {audience}"
    );
    assert_eq!(role["data"]["token_policies"], json!(["default"]));

    let err = bao
        .api(Method::GET, "auth/kubernetes/role/missing", None)
        .await
        .unwrap_err();
    assert_eq!(err.0, 404, "{err:?}");
}

/// JWT auth logins need no Kubernetes: sign a token locally and log in with it. This also proves
/// that a policy written through the harness is enforced.
#[tokio::test]
async fn jwt_login_gets_a_token_limited_by_policy() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

    let key = rsa::RsaPrivateKey::new(&mut Rng09(rand::rng()), 2048).expect("RSA key");
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let private_pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let signing_key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap();
    let issuer = "https://issuer.example.test";
    let subject = "system:serviceaccount:payments:payments-api";
    let sign = |iss: &str, sub: &str, aud: &str| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims =
            json!({"iss": iss, "sub": sub, "aud": [aud], "iat": now, "nbf": now, "exp": now + 600});
        encode(&Header::new(Algorithm::RS256), &claims, &signing_key).unwrap()
    };

    let bao = OpenBao::start().await;
    bao.enable_kv("secret", 2).await;
    bao.kv_put("secret", 2, "payments/db", json!({"password": "pw"}))
        .await;
    bao.kv_put("secret", 2, "fraud/feed", json!({"token": "other-team"}))
        .await;
    bao.write_policy(
        "payments-read",
        "path \"secret/data/payments/*\" { capabilities = [\"read\"] }",
    )
    .await;
    bao.enable_jwt_auth("jwt", issuer, &public_pem).await;
    bao.jwt_role("jwt", "payments", subject, &["vault"], &["payments-read"])
        .await;

    let login = bao
        .login("jwt", "payments", &sign(issuer, subject, "vault"))
        .await
        .expect("JWT login");
    let token = login["auth"]["client_token"]
        .as_str()
        .expect("client_token")
        .to_string();
    assert_eq!(login["auth"]["lease_duration"], 20 * 60);
    assert!(login["auth"]["policies"]
        .as_array()
        .unwrap()
        .contains(&json!("payments-read")));

    let read = bao
        .api_with_token(Some(&token), Method::GET, "secret/data/payments/db", None)
        .await
        .expect("allowed read");
    assert_eq!(read["data"]["data"], json!({"password": "pw"}));
    let denied = bao
        .api_with_token(Some(&token), Method::GET, "secret/data/fraud/feed", None)
        .await
        .unwrap_err();
    assert_eq!(denied.0, 403, "{denied:?}");

    // Wrong audience, wrong subject, wrong issuer, unknown role: all refused.
    for (jwt, role) in [
        (sign(issuer, subject, "not-vault"), "payments"),
        (
            sign(issuer, "system:serviceaccount:payments:intruder", "vault"),
            "payments",
        ),
        (sign("https://evil.test", subject, "vault"), "payments"),
        (sign(issuer, subject, "vault"), "nope"),
    ] {
        let err = bao.login("jwt", role, &jwt).await.unwrap_err();
        assert!(
            err.0 == 400 || err.0 == 403,
            "login should be refused: {err:?}"
        );
    }
}

#[tokio::test]
async fn pause_hangs_resume_recovers_stop_refuses() {
    let mut bao = OpenBao::start().await;
    bao.enable_kv("kv", 2).await;
    bao.kv_put("kv", 2, "x", json!({"a": "b"})).await;

    bao.pause();
    let started = Instant::now();
    let err = bao.health().await.unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "a paused server should hang, not refuse: {err}"
    );

    bao.resume();
    assert_eq!(bao.health().await, Ok(200));
    assert_eq!(
        bao.kv_get("kv", 2, "x").await,
        Some(json!({"a": "b"})),
        "data survives a pause"
    );

    let addr = bao.addr();
    bao.stop().await;
    let started = Instant::now();
    let err = bao.health().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a stopped server should refuse at once: {err}"
    );
    let err = bao.api(Method::GET, "sys/health", None).await.unwrap_err();
    assert_eq!(err.0, 0, "transport errors are status 0: {err:?}");
    assert!(std::net::TcpStream::connect(addr.trim_start_matches("http://")).is_err());

    // Idempotent, and signals after stop are no-ops.
    bao.stop().await;
    bao.pause();
    bao.resume();
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
