//! TokenRequest, TokenReview, and verifying issued tokens with the JWKS and public key.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_standin::StandIn;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use crate::helpers::{decode_claims, raw, token_request, token_review};

#[tokio::test]
async fn token_request_semantics() {
    let k8s = StandIn::start().await;
    let missing = token_request(&k8s, "apps", "web", json!({})).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json()["message"],
        "serviceaccounts \"web\" not found"
    );

    let sa = k8s.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "apps"}}));
    let sa_uid = sa["metadata"]["uid"].as_str().unwrap().to_string();

    let short = token_request(&k8s, "apps", "web", json!({"expirationSeconds": 300})).await;
    assert_eq!(short.status, 422);
    assert!(short.json()["message"]
        .as_str()
        .unwrap()
        .contains("spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"));

    // Defaults: the API server's audiences, one hour.
    let default = token_request(&k8s, "apps", "web", json!({})).await;
    assert_eq!(default.status, 201);
    let response = default.json();
    assert_eq!(response["kind"], "TokenRequest");
    assert_eq!(response["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(response["spec"]["audiences"], json!(k8s.api_audiences()));
    let token = response["status"]["token"].as_str().unwrap();
    let (header, claims) = decode_claims(&k8s, token);
    assert_eq!(header.kid.as_deref(), Some(k8s.key_id().as_str()));
    assert_eq!(claims["iss"], k8s.issuer());
    assert_eq!(claims["aud"], json!(k8s.api_audiences()));
    assert_eq!(claims["sub"], "system:serviceaccount:apps:web");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(claims["nbf"], claims["iat"]);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(
        claims["kubernetes.io"],
        json!({"namespace": "apps", "serviceaccount": {"name": "web", "uid": sa_uid}})
    );
    let expiry: k8s_openapi::jiff::Timestamp = response["status"]["expirationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(expiry.as_second(), claims["exp"].as_i64().unwrap());

    // Explicit audiences; expiration capped at 48h.
    let vault = token_request(
        &k8s,
        "apps",
        "web",
        json!({"audiences": ["vault"], "expirationSeconds": 999_999}),
    )
    .await;
    assert_eq!(vault.status, 201);
    let (_, claims) = decode_claims(&k8s, vault.json()["status"]["token"].as_str().unwrap());
    assert_eq!(claims["aud"], json!(["vault"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        48 * 3600
    );
    assert_eq!(vault.json()["spec"]["expirationSeconds"], 48 * 3600);

    // Bound to a pod: the pod must exist and run as this ServiceAccount.
    let pod = k8s.seed(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "apps"},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "c", "image": "i"}]}}));
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap();
    let bound = token_request(
        &k8s,
        "apps",
        "web",
        json!({"audiences": ["vault"],
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-1", "uid": pod_uid}}),
    )
    .await;
    assert_eq!(bound.status, 201, "{}", bound.body);
    let (_, claims) = decode_claims(&k8s, bound.json()["status"]["token"].as_str().unwrap());
    assert_eq!(
        claims["kubernetes.io"]["pod"],
        json!({"name": "web-1", "uid": pod_uid})
    );
    let stale_uid = token_request(
        &k8s,
        "apps",
        "web",
        json!({
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-1", "uid": "0000"}}),
    )
    .await;
    assert_eq!(stale_uid.status, 409);
    k8s.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "other", "namespace": "apps"}}));
    let wrong_sa = token_request(
        &k8s,
        "apps",
        "other",
        json!({
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-1"}}),
    )
    .await;
    assert_eq!(wrong_sa.status, 400);
    assert!(wrong_sa.json()["message"]
        .as_str()
        .unwrap()
        .contains("different serviceaccount name"));

    // Through kube's typed subresource call.
    let sas: Api<ServiceAccount> = Api::namespaced(k8s.client(), "apps");
    let typed: k8s_openapi::api::authentication::v1::TokenRequest = sas
        .create_subresource(
            "token",
            "web",
            &PostParams::default(),
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": ["a", "b"]}}),
        )
        .await
        .unwrap();
    assert_eq!(typed.spec.audiences, ["a", "b"]);
    assert!(!typed.status.unwrap().token.is_empty());

    let records = k8s.token_requests();
    let statuses: Vec<u16> = records.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [404, 422, 201, 201, 201, 409, 400, 201]);
    assert_eq!(records[1].expiration_seconds, 300);
    assert_eq!(
        records[2].audiences,
        Vec::<String>::new(),
        "recorded as requested"
    );
    assert_eq!(records[2].expiration_seconds, 3600);
    assert_eq!(records[3].audiences, ["vault"]);
    assert_eq!(
        (
            records[3].namespace.as_str(),
            records[3].service_account.as_str()
        ),
        ("apps", "web")
    );
    assert_eq!(k8s.count("create", "serviceaccounts/token"), 8);
}

#[tokio::test]
async fn token_review_semantics() {
    let k8s = StandIn::start().await;
    k8s.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "apps"}}));
    let reviewer = k8s.issue_token("secret-injector", "secret-injector", &[], 3600);
    let default_token = k8s.issue_token("apps", "web", &[], 3600);
    let vault_token = k8s.issue_token("apps", "web", &["vault"], 3600);

    // The caller must authenticate.
    for caller in [None, Some("garbage"), Some(vault_token.as_str())] {
        let denied = token_review(&k8s, caller, json!({"token": default_token})).await;
        assert_eq!(denied.status, 401, "caller {caller:?}");
        assert_eq!(
            denied.json(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        );
    }
    assert!(
        k8s.token_reviews().is_empty(),
        "unauthenticated calls review nothing"
    );

    // Default audiences.
    let ok = token_review(&k8s, Some(&reviewer), json!({"token": default_token})).await;
    assert_eq!(ok.status, 201);
    let review = ok.json();
    assert_eq!(review["kind"], "TokenReview");
    assert_eq!(review["apiVersion"], "authentication.k8s.io/v1");
    let status = &review["status"];
    assert_eq!(status["authenticated"], true);
    let sa_uid =
        k8s.object("serviceaccounts", Some("apps"), "web").unwrap()["metadata"]["uid"].clone();
    assert_eq!(status["user"]["username"], "system:serviceaccount:apps:web");
    assert_eq!(status["user"]["uid"], sa_uid);
    assert_eq!(
        status["user"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:apps",
            "system:authenticated"
        ])
    );
    let (_, claims) = decode_claims(&k8s, &default_token);
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/credential-id"],
        json!([format!("JTI={}", claims["jti"].as_str().unwrap())])
    );
    assert_eq!(status["audiences"], json!(k8s.api_audiences()));

    // A token for another audience fails the default audience check…
    let wrong_aud = token_review(&k8s, Some(&reviewer), json!({"token": vault_token})).await;
    assert_eq!(wrong_aud.status, 201);
    assert_eq!(wrong_aud.json()["status"]["authenticated"], false);
    assert_eq!(
        wrong_aud.json()["status"]["error"],
        format!("[invalid bearer token, token audiences [\"vault\"] is invalid for the target audiences [\"{}\"]]", k8s.issuer())
    );
    // …but passes when that audience is requested; status.audiences is the intersection.
    let right_aud = token_review(
        &k8s,
        Some(&reviewer),
        json!({"token": vault_token, "audiences": ["vault", "other"]}),
    )
    .await;
    assert_eq!(right_aud.json()["status"]["authenticated"], true);
    assert_eq!(right_aud.json()["status"]["audiences"], json!(["vault"]));

    // Expired (beyond the 60s leeway), forged, and foreign-issuer tokens fail.
    let expired = k8s.issue_token("apps", "web", &[], -120);
    // Change one signature character in the middle (always a different character).
    let at = default_token.len() - 20;
    let swapped = if &default_token[at..at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    let forged = format!(
        "{}{swapped}{}",
        &default_token[..at],
        &default_token[at + 1..]
    );
    assert_ne!(forged, default_token);
    for bad in [expired.as_str(), forged.as_str(), "not-a-jwt"] {
        let review = token_review(&k8s, Some(&reviewer), json!({"token": bad})).await;
        assert_eq!(review.status, 201);
        assert_eq!(review.json()["status"]["authenticated"], false, "{bad}");
        assert!(review.json()["status"]["error"]
            .as_str()
            .unwrap()
            .starts_with("[invalid bearer token, "));
    }

    // The ServiceAccount must still exist with the same uid.
    k8s.remove("serviceaccounts", Some("apps"), "web");
    let deleted = token_review(&k8s, Some(&reviewer), json!({"token": default_token})).await;
    assert_eq!(deleted.json()["status"]["authenticated"], false);
    k8s.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "apps"}}));
    let recreated = token_review(&k8s, Some(&reviewer), json!({"token": default_token})).await;
    assert_eq!(
        recreated.json()["status"]["authenticated"],
        false,
        "new uid, old token"
    );
    assert!(recreated.json()["status"]["error"]
        .as_str()
        .unwrap()
        .contains("does not match claim"));
    let fresh = k8s.issue_token("apps", "web", &[], 3600);
    let fresh_review = token_review(&k8s, Some(&reviewer), json!({"token": fresh})).await;
    assert_eq!(fresh_review.json()["status"]["authenticated"], true);

    let records = k8s.token_reviews();
    let outcomes: Vec<bool> = records.iter().map(|r| r.authenticated).collect();
    assert_eq!(
        outcomes,
        [true, false, true, false, false, false, false, false, true]
    );
    assert_eq!(
        records[0].username.as_deref(),
        Some("system:serviceaccount:apps:web")
    );
    assert_eq!(records[2].audiences, ["vault", "other"]);
    assert_eq!(records[1].username, None);
    assert_eq!(k8s.count("create", "tokenreviews"), 3 + 9);

    // The client() token is a valid caller.
    let client = k8s.client();
    let request = http::Request::post("/apis/authentication.k8s.io/v1/tokenreviews")
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": fresh}})).unwrap())
        .unwrap();
    let typed: k8s_openapi::api::authentication::v1::TokenReview =
        client.request(request).await.unwrap();
    assert_eq!(typed.status.unwrap().authenticated, Some(true));
}

#[tokio::test]
async fn jwks_and_public_key_verify_issued_tokens() {
    let k8s = StandIn::start().await;
    k8s.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "apps"}}));
    let token = k8s.issue_token("apps", "web", &["vault"], 600);
    let jwks = raw(&k8s, "GET", "/openid/v1/jwks", &[], None).await.json();
    let key = &jwks["keys"][0];
    assert_eq!(key["kid"], k8s.key_id());
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        key["n"].as_str().unwrap(),
        key["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["vault"]);
    validation.set_issuer(&[k8s.issuer()]);
    jsonwebtoken::decode::<Value>(&token, &decoding, &validation).expect("JWKS key verifies");
    assert!(k8s
        .public_key_pem()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    let discovery = raw(&k8s, "GET", "/.well-known/openid-configuration", &[], None)
        .await
        .json();
    assert_eq!(discovery["issuer"], k8s.issuer());
    assert_eq!(
        k8s.total_requests(),
        0,
        "JWKS and discovery are not counted"
    );
}
