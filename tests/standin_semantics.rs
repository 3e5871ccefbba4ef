//! Proves that the Kubernetes API stand-in (tests/support/standin.rs) follows the real API
//! server's semantics, through a real `kube::Client` and through raw HTTP.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::ByteString;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
    WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind, Status};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::{json, Value};
use support::standin::StandIn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A raw HTTP/1.1 response.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A watch response body: one JSON event per line.
    fn events(&self) -> Vec<Value> {
        self.body
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}"))
            })
            .collect()
    }
}

/// Send one request over a fresh TCP connection and read the whole response.
async fn raw(
    k8s: &StandIn,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Raw {
    let addr = k8s.url().trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("response within 20s")
        .expect("read");
    let text = String::from_utf8(response).expect("utf-8 response");
    let (head, rest) = text.split_once("\r\n\r\n").expect("header/body separator");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

fn api_error(err: kube::Error) -> Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn deployment(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
        "status": {"replicas": 99},
    })
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .parse()
        .expect("numeric resourceVersion")
}

fn decode_claims(k8s: &StandIn, token: &str) -> (jsonwebtoken::Header, Value) {
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(k8s.public_key_pem().as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.set_issuer(&[k8s.issuer()]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).expect("valid signature");
    (data.header, data.claims)
}

async fn token_request(k8s: &StandIn, ns: &str, sa: &str, spec: Value) -> Raw {
    let body =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    raw(
        k8s,
        "POST",
        &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
        &[("Content-Type", "application/json")],
        Some(&body.to_string()),
    )
    .await
}

async fn token_review(k8s: &StandIn, caller: Option<&str>, spec: Value) -> Raw {
    let body =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec});
    let bearer = caller.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    raw(
        k8s,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        &headers,
        Some(&body.to_string()),
    )
    .await
}

async fn eventually<F: Fn() -> bool>(what: &str, condition: F) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

// ---------------------------------------------------------------------------------------------
// CRUD, metadata and errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn typed_crud_fills_metadata_and_merges_string_data() {
    let k8s = StandIn::start().await;
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), "default");

    let rv_before = k8s.resource_version();
    let created = secrets
        .create(
            &PostParams::default(),
            &secret("db", &[("password", "hunter2")]),
        )
        .await
        .unwrap();
    let meta = &created.metadata;
    let uid = meta.uid.clone().unwrap();
    assert_eq!(uid.len(), 36, "uid looks like a UUID: {uid}");
    assert_eq!(uid.matches('-').count(), 4);
    let created_rv: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();
    assert_eq!(created_rv, rv_before + 1, "one global counter, bumped once");
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(
        meta.namespace.as_deref(),
        Some("default"),
        "namespace comes from the URL"
    );
    assert_eq!(
        meta.generation, None,
        "Secrets have no generation on the real server"
    );
    assert_eq!(
        created.type_.as_deref(),
        Some("Opaque"),
        "type defaults to Opaque"
    );
    assert!(created.string_data.is_none(), "stringData is never stored");
    assert_eq!(
        created.data.as_ref().unwrap()["password"],
        ByteString(b"hunter2".to_vec())
    );
    let stored = k8s.object("secrets", Some("default"), "db").unwrap();
    assert_eq!(stored["data"]["password"], "aHVudGVyMg==");
    assert!(stored.get("stringData").is_none());
    assert_eq!(stored["kind"], "Secret");
    assert_eq!(stored["apiVersion"], "v1");

    // get
    let fetched = secrets.get("db").await.unwrap();
    assert_eq!(fetched.metadata.uid.as_deref(), Some(uid.as_str()));

    // update with a stale resourceVersion: Conflict
    let mut stale = fetched.clone();
    stale.metadata.resource_version = Some("1".into());
    let err = api_error(
        secrets
            .replace("db", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on secrets \"db\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // update with the current resourceVersion, then unconditionally (empty resourceVersion)
    let mut current = fetched.clone();
    current.string_data = Some(BTreeMap::from([("user".into(), "admin".into())]));
    let updated = secrets
        .replace("db", &PostParams::default(), &current)
        .await
        .unwrap();
    let updated_rv: u64 = updated
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(updated_rv > created_rv);
    assert_eq!(
        updated.data.as_ref().unwrap().len(),
        2,
        "stringData merged into data"
    );

    let mut unconditional = updated.clone();
    unconditional.metadata.resource_version = None;
    unconditional.metadata.uid = None;
    unconditional.metadata.creation_timestamp = None;
    unconditional.data.as_mut().unwrap().remove("user");
    let replaced = secrets
        .replace("db", &PostParams::default(), &unconditional)
        .await
        .unwrap();
    assert_eq!(
        replaced.metadata.uid.as_deref(),
        Some(uid.as_str()),
        "uid preserved"
    );
    assert_eq!(
        replaced.metadata.creation_timestamp, created.metadata.creation_timestamp,
        "creationTimestamp preserved"
    );
    assert_eq!(replaced.data.as_ref().unwrap().len(), 1);

    // create again: AlreadyExists
    let err = api_error(
        secrets
            .create(&PostParams::default(), &secret("db", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "secrets \"db\" already exists");

    // delete returns the deleted object; then get is NotFound
    let deleted = secrets
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = deleted.left().expect("the deleted object, not a Status");
    assert_eq!(deleted.metadata.uid.as_deref(), Some(uid.as_str()));
    let err = api_error(secrets.get("db").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "secrets \"db\" not found");
    let err = api_error(
        secrets
            .delete("db", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    let err = api_error(
        secrets
            .replace("db", &PostParams::default(), &unconditional)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404, "PUT does not create Secrets");

    // counting
    assert_eq!(k8s.count("create", "secrets"), 2);
    assert_eq!(k8s.count("get", "secrets"), 2);
    assert_eq!(k8s.count("update", "secrets"), 4);
    assert_eq!(k8s.count("delete", "secrets"), 2);
    assert_eq!(k8s.writes("secrets"), 8, "failed writes are writes too");
}

#[tokio::test]
async fn error_bodies_are_real_status_objects() {
    let k8s = StandIn::start().await;
    let json_ct = [("Content-Type", "application/json")];

    let missing = raw(
        &k8s,
        "GET",
        "/api/v1/namespaces/default/secrets/x",
        &[],
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(
        missing.json(),
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"secrets \"x\" not found","reason":"NotFound",
               "details":{"name":"x","kind":"secrets"},"code":404})
    );

    let grouped = raw(
        &k8s,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/web",
        &[],
        None,
    )
    .await;
    assert_eq!(grouped.status, 404);
    assert_eq!(
        grouped.json()["message"],
        "deployments.apps \"web\" not found"
    );
    assert_eq!(
        grouped.json()["details"],
        json!({"name": "web", "group": "apps", "kind": "deployments"})
    );

    let unknown = raw(&k8s, "GET", "/api/v1/namespaces/default/widgets", &[], None).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["kind"], "Status");
    assert_eq!(
        unknown.json()["message"],
        "the server could not find the requested resource"
    );
    let unknown_group = raw(&k8s, "GET", "/apis/example.com/v1/widgets", &[], None).await;
    assert_eq!(unknown_group.status, 404);
    let wrong_scope = raw(&k8s, "GET", "/api/v1/secrets/x", &[], None).await;
    assert_eq!(
        wrong_scope.status, 404,
        "namespaced objects have no cluster-scoped path"
    );

    let bad_name = raw(
        &k8s,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &json_ct,
        Some(r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"Bad_Name"}}"#),
    )
    .await;
    assert_eq!(bad_name.status, 422);
    let status = bad_name.json();
    assert_eq!(status["reason"], "Invalid");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("Secret \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
        "{status}"
    );
    assert_eq!(status["details"]["kind"], "Secret");
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueInvalid"
    );

    // Namespaces are DNS-1123 labels: a dot is fine in a subdomain, not in a label.
    let dotted_ns = raw(
        &k8s,
        "POST",
        "/api/v1/namespaces",
        &json_ct,
        Some(r#"{"metadata":{"name":"a.b"}}"#),
    )
    .await;
    assert_eq!(dotted_ns.status, 422);
    assert!(dotted_ns.json()["message"]
        .as_str()
        .unwrap()
        .contains("RFC 1123 label"));
    let dotted_secret = raw(
        &k8s,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &json_ct,
        Some(r#"{"metadata":{"name":"a.b"}}"#),
    )
    .await;
    assert_eq!(
        dotted_secret.status, 201,
        "a body without apiVersion/kind takes the endpoint's"
    );

    let bad_key = raw(
        &k8s,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &json_ct,
        Some(r#"{"metadata":{"name":"k"},"data":{"bad key":"eA=="}}"#),
    )
    .await;
    assert_eq!(bad_key.status, 422);
    assert!(bad_key.json()["message"]
        .as_str()
        .unwrap()
        .contains("data[bad key]: Invalid value: \"bad key\": a valid config key"));

    let bad_base64 = raw(
        &k8s,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &json_ct,
        Some(r#"{"metadata":{"name":"b"},"data":{"k":"not base64!"}}"#),
    )
    .await;
    assert_eq!(
        bad_base64.status, 400,
        "a decoding error is a 400 on the real server"
    );
    assert_eq!(bad_base64.json()["reason"], "BadRequest");
    assert!(bad_base64.json()["message"].as_str().unwrap().starts_with(
        "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte"
    ));

    let ns_mismatch = raw(
        &k8s,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &json_ct,
        Some(r#"{"metadata":{"name":"m","namespace":"other"}}"#),
    )
    .await;
    assert_eq!(ns_mismatch.status, 400);
    assert_eq!(
        ns_mismatch.json()["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );

    let garbage = raw(
        &k8s,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &json_ct,
        Some("{nope"),
    )
    .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.json()["reason"], "BadRequest");

    let wrong_kind = raw(
        &k8s,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &json_ct,
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"w"}}"#),
    )
    .await;
    assert_eq!(wrong_kind.status, 400);

    let with_rv = raw(
        &k8s,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &json_ct,
        Some(r#"{"metadata":{"name":"r","resourceVersion":"5"}}"#),
    )
    .await;
    assert_eq!(with_rv.status, 500);
    assert_eq!(
        with_rv.json()["message"],
        "resourceVersion should not be set on objects to be created"
    );

    let put_collection = raw(
        &k8s,
        "PUT",
        "/api/v1/namespaces/default/secrets",
        &json_ct,
        Some("{}"),
    )
    .await;
    assert_eq!(put_collection.status, 405);
    assert_eq!(put_collection.json()["reason"], "MethodNotAllowed");

    let name_mismatch = raw(
        &k8s,
        "PUT",
        "/api/v1/namespaces/default/secrets/a.b",
        &json_ct,
        Some(r#"{"metadata":{"name":"other"}}"#),
    )
    .await;
    assert_eq!(name_mismatch.status, 400);
    assert_eq!(
        name_mismatch.json()["message"],
        "the name of the object (other) does not match the name on the URL (a.b)"
    );

    let not_json = raw(&k8s, "GET", "/nothing/here", &[], None).await;
    assert_eq!(not_json.status, 404);
}

#[tokio::test]
async fn secret_type_and_immutability_are_enforced() {
    let k8s = StandIn::start().await;
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), "default");
    let created = secrets
        .create(&PostParams::default(), &secret("s", &[("a", "1")]))
        .await
        .unwrap();

    let mut retyped = created.clone();
    retyped.type_ = Some("kubernetes.io/basic-auth".into());
    retyped.string_data = Some(BTreeMap::from([("username".into(), "u".into())]));
    let err = api_error(
        secrets
            .replace("s", &PostParams::default(), &retyped)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Secret \"s\" is invalid: type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"
    );

    let mut tls = secret("tls", &[("tls.crt", "x")]);
    tls.type_ = Some("kubernetes.io/tls".into());
    let err = api_error(
        secrets
            .create(&PostParams::default(), &tls)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("data[tls.key]: Required value"),
        "{}",
        err.message
    );

    let mut frozen = secret("frozen", &[("a", "1")]);
    frozen.immutable = Some(true);
    let frozen = secrets
        .create(&PostParams::default(), &frozen)
        .await
        .unwrap();
    let mut changed = frozen.clone();
    changed.string_data = Some(BTreeMap::from([("a".into(), "2".into())]));
    let err = api_error(
        secrets
            .replace("frozen", &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(err
        .message
        .contains("data: Forbidden: field is immutable when `immutable` is set"));
    // Metadata may still change on an immutable Secret.
    let mut labelled = frozen.clone();
    labelled.metadata.labels = Some(BTreeMap::from([("team".into(), "a".into())]));
    secrets
        .replace("frozen", &PostParams::default(), &labelled)
        .await
        .unwrap();
}

#[tokio::test]
async fn generate_name_and_dry_run() {
    let k8s = StandIn::start().await;
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), "default");
    let mut generated = secret("", &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("token-".into());
    let created = secrets
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = created.metadata.name.unwrap();
    assert!(
        name.starts_with("token-") && name.len() == "token-".len() + 5,
        "{name}"
    );
    assert!(name[6..]
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    assert!(k8s.object("secrets", Some("default"), &name).is_some());

    let mut no_name = secret("", &[]);
    no_name.metadata.name = None;
    let err = api_error(
        secrets
            .create(&PostParams::default(), &no_name)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(err
        .message
        .contains("metadata.name: Required value: name or generateName is required"));

    let rv_before = k8s.resource_version();
    let writes_before = k8s.writes("secrets");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let preview = secrets
        .create(&dry, &secret("preview", &[("k", "v")]))
        .await
        .unwrap();
    assert_eq!(preview.metadata.name.as_deref(), Some("preview"));
    assert!(
        preview.metadata.uid.is_some(),
        "dry-run create still fills uid"
    );
    assert!(
        preview.metadata.resource_version.is_none(),
        "but is never persisted"
    );
    assert!(k8s.object("secrets", Some("default"), "preview").is_none());
    assert_eq!(k8s.resource_version(), rv_before);
    assert_eq!(
        k8s.writes("secrets"),
        writes_before,
        "dry-run is not a write"
    );
    assert_eq!(k8s.dry_runs("create", "secrets"), 1);
    assert_eq!(
        k8s.count("create", "secrets"),
        3,
        "but it is a counted create"
    );
    // Dry-run still validates.
    let err = api_error(secrets.create(&dry, &secret("Bad", &[])).await.unwrap_err());
    assert_eq!(err.code, 422);
    // Dry-run delete keeps the object.
    secrets
        .delete(&name, &DeleteParams::default().dry_run())
        .await
        .unwrap();
    assert!(k8s.object("secrets", Some("default"), &name).is_some());
}

#[tokio::test]
async fn generation_and_status_subresource() {
    let k8s = StandIn::start().await;
    let deployments: Api<Deployment> = Api::namespaced(k8s.client(), "apps");
    let initial: Deployment = serde_json::from_value(deployment("web", "nginx:1")).unwrap();
    let created = deployments
        .create(&PostParams::default(), &initial)
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        serde_json::to_value(created.status.clone().unwrap()).unwrap(),
        json!({}),
        "status is reset on create"
    );

    // A spec change bumps the generation; status in the main resource's body is ignored.
    let mut v2 = created.clone();
    v2.spec.as_mut().unwrap().replicas = Some(3);
    v2.status.as_mut().unwrap().replicas = Some(42);
    let updated = deployments
        .replace("web", &PostParams::default(), &v2)
        .await
        .unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert_eq!(
        updated.status.as_ref().unwrap().replicas,
        None,
        "status untouched by PUT"
    );

    // A metadata-only change does not.
    let mut labelled = updated.clone();
    labelled
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "web".into());
    let labelled = deployments
        .replace("web", &PostParams::default(), &labelled)
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    assert!(
        rv(&serde_json::to_value(&labelled).unwrap())
            > rv(&serde_json::to_value(&updated).unwrap())
    );

    // PUT /status changes only status, and leaves the generation alone.
    let mut status_update = labelled.clone();
    status_update.status.as_mut().unwrap().replicas = Some(3);
    status_update.status.as_mut().unwrap().observed_generation = Some(2);
    status_update.spec.as_mut().unwrap().replicas = Some(10);
    let with_status = deployments
        .replace_status("web", &PostParams::default(), &status_update)
        .await
        .unwrap();
    assert_eq!(with_status.status.as_ref().unwrap().replicas, Some(3));
    assert_eq!(
        with_status.spec.as_ref().unwrap().replicas,
        Some(3),
        "spec untouched by /status"
    );
    assert_eq!(with_status.metadata.generation, Some(2));

    // PATCH /status likewise.
    let patched = deployments
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}, "status": {"readyReplicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.status.as_ref().unwrap().ready_replicas, Some(3));
    assert_eq!(patched.spec.as_ref().unwrap().replicas, Some(3));

    // A stale resourceVersion conflicts on /status too.
    let err = api_error(
        deployments
            .replace_status("web", &PostParams::default(), &status_update)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"
    );

    assert_eq!(k8s.count("update", "deployments/status"), 2);
    assert_eq!(k8s.count("patch", "deployments/status"), 1);
    assert_eq!(k8s.count("update", "deployments"), 2);
    assert_eq!(k8s.writes("deployments/status"), 3);

    // /status does not exist on resources without it.
    let none = raw(
        &k8s,
        "GET",
        "/api/v1/namespaces/default/secrets/x/status",
        &[],
        None,
    )
    .await;
    assert_eq!(none.status, 404);
}

#[tokio::test]
async fn no_op_update_writes_nothing() {
    let k8s = StandIn::start().await;
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), "default");
    let created = secrets
        .create(&PostParams::default(), &secret("same", &[("a", "1")]))
        .await
        .unwrap();
    let rv_before = k8s.resource_version();
    let again = secrets
        .replace("same", &PostParams::default(), &created)
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(k8s.resource_version(), rv_before);
    let patched = secrets
        .patch(
            "same",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "MQ=="}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.metadata.resource_version,
        created.metadata.resource_version
    );
}

#[tokio::test]
async fn patch_content_types() {
    let k8s = StandIn::start().await;
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), "default");
    let created = secrets
        .create(&PostParams::default(), &secret("p", &[("a", "1")]))
        .await
        .unwrap();
    let path = "/api/v1/namespaces/default/secrets/p";

    // RFC 6902 JSON patch, with a passing and a failing `test`.
    let json_patch = raw(
        &k8s,
        "PATCH",
        path,
        &[("Content-Type", "application/json-patch+json")],
        Some(r#"[{"op":"test","path":"/data/a","value":"MQ=="},{"op":"add","path":"/data/b","value":"Mg=="}]"#),
    )
    .await;
    assert_eq!(json_patch.status, 200, "{}", json_patch.body);
    assert_eq!(json_patch.json()["data"]["b"], "Mg==");
    let failed_test = raw(
        &k8s,
        "PATCH",
        path,
        &[("Content-Type", "application/json-patch+json")],
        Some(r#"[{"op":"test","path":"/data/a","value":"nope"}]"#),
    )
    .await;
    assert_eq!(failed_test.status, 422);
    assert_eq!(failed_test.json()["reason"], "Invalid");

    // RFC 7386 merge patch: null deletes.
    let merged = secrets
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null}, "metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert!(!merged.data.as_ref().unwrap().contains_key("a"));
    assert_eq!(merged.metadata.labels.as_ref().unwrap()["x"], "y");

    // Strategic merge patch, approximated as merge patch with directives dropped.
    let strategic = secrets
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"metadata": {"annotations": {"k": "v"}, "$setElementOrder/finalizers": []}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(strategic.metadata.annotations.as_ref().unwrap()["k"], "v");
    let stored = k8s.object("secrets", Some("default"), "p").unwrap();
    assert!(stored["metadata"]
        .get("$setElementOrder/finalizers")
        .is_none());

    // A resourceVersion in the patch is a precondition.
    let stale = secrets
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": created.metadata.resource_version}, "data": {"c": "Mw=="}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(stale).code, 409);

    // Patching a missing object is NotFound, except for apply, which creates it.
    let err = api_error(
        secrets
            .patch("ghost", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    let applied = secrets
        .patch(
            "applied",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "applied"}, "stringData": {"k": "v"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        applied.data.as_ref().unwrap()["k"],
        ByteString(b"v".to_vec())
    );
    let reapplied = secrets
        .patch(
            "applied",
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "applied", "labels": {"l": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(reapplied.metadata.uid, applied.metadata.uid);
    assert_eq!(reapplied.metadata.labels.as_ref().unwrap()["l"], "1");

    // Apply needs a field manager.
    let no_manager = raw(
        &k8s,
        "PATCH",
        path,
        &[("Content-Type", "application/apply-patch+yaml")],
        Some(r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"p"}}"#),
    )
    .await;
    assert_eq!(no_manager.status, 422);
    assert!(no_manager.json()["message"]
        .as_str()
        .unwrap()
        .contains("fieldManager: Required value"));

    // Apply bodies may be YAML.
    let yaml = raw(
        &k8s,
        "PATCH",
        &format!("{path}?fieldManager=yaml"),
        &[("Content-Type", "application/apply-patch+yaml")],
        Some("apiVersion: v1\nkind: Secret\nmetadata:\n  name: p\n  labels:\n    from: yaml\n"),
    )
    .await;
    assert_eq!(yaml.status, 200, "{}", yaml.body);
    assert_eq!(yaml.json()["metadata"]["labels"]["from"], "yaml");

    // Unknown patch type; strategic merge on a custom resource.
    let unknown = raw(
        &k8s,
        "PATCH",
        path,
        &[("Content-Type", "application/json")],
        Some("{}"),
    )
    .await;
    assert_eq!(unknown.status, 415);
    k8s.seed(
        json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "store", "namespace": "default"}, "spec": {}}),
    );
    let smp_on_crd = raw(
        &k8s,
        "PATCH",
        "/apis/secret-injector.io/v1alpha1/namespaces/default/secretstores/store",
        &[("Content-Type", "application/strategic-merge-patch+json")],
        Some("{}"),
    )
    .await;
    assert_eq!(smp_on_crd.status, 415);

    assert_eq!(k8s.count("patch", "secrets"), 11);
}

#[tokio::test]
async fn delete_preconditions_and_finalizers() {
    let k8s = StandIn::start().await;
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), "default");
    let created = secrets
        .create(&PostParams::default(), &secret("d", &[]))
        .await
        .unwrap();

    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("00000000-0000-4000-8000-000000000000".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let err = api_error(secrets.delete("d", &wrong_uid).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message
            .contains("Precondition failed: UID in precondition"),
        "{}",
        err.message
    );
    let wrong_rv = DeleteParams {
        preconditions: Some(Preconditions {
            uid: None,
            resource_version: Some("1".into()),
        }),
        ..Default::default()
    };
    assert_eq!(
        api_error(secrets.delete("d", &wrong_rv).await.unwrap_err()).code,
        409
    );
    let right = DeleteParams {
        preconditions: Some(Preconditions {
            uid: created.metadata.uid.clone(),
            resource_version: created.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    secrets.delete("d", &right).await.unwrap();
    assert!(k8s.object("secrets", Some("default"), "d").is_none());

    // A finalizer holds the object, marked for deletion, until it is removed.
    let mut held = secret("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    secrets.create(&PostParams::default(), &held).await.unwrap();
    let pending = secrets
        .delete("held", &DeleteParams::default())
        .await
        .unwrap();
    let pending = pending.left().unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    let still = secrets.get("held").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    let err = api_error(
        secrets
            .patch(
                "held",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}}),
                ),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422, "no new finalizers while deleting");
    secrets
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(
        k8s.object("secrets", Some("default"), "held").is_none(),
        "deletion completed"
    );

    // deletecollection with a selector.
    for (name, team) in [("c1", "a"), ("c2", "a"), ("c3", "b")] {
        k8s.seed(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "default", "labels": {"team": team}}}));
    }
    let removed = secrets
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("team=a"),
        )
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(removed.items.len(), 2);
    let left: Vec<String> = k8s
        .objects("secrets")
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec!["c3"]);
    assert_eq!(k8s.count("deletecollection", "secrets"), 1);
}

// ---------------------------------------------------------------------------------------------
// Lists: selectors and pagination
// ---------------------------------------------------------------------------------------------

async fn names(api: &Api<Secret>, lp: &ListParams) -> Vec<String> {
    api.list(lp)
        .await
        .unwrap_or_else(|e| panic!("list {lp:?}: {e}"))
        .items
        .into_iter()
        .map(|s| s.metadata.name.unwrap())
        .collect()
}

#[tokio::test]
async fn label_and_field_selectors() {
    let k8s = StandIn::start().await;
    for (name, ns, labels) in [
        ("a", "default", json!({"env": "prod", "tier": "web"})),
        ("b", "default", json!({"env": "dev", "tier": "web"})),
        ("c", "default", json!({"env": "test"})),
        ("d", "default", json!({"count": "7"})),
        ("e", "other", json!({"env": "prod"})),
    ] {
        k8s.seed(json!({"apiVersion": "v1", "kind": "Secret", "type": if name == "c" { "kubernetes.io/ssh-auth" } else { "Opaque" },
            "metadata": {"name": name, "namespace": ns, "labels": labels}, "data": {"ssh-privatekey": ""}}));
    }
    let default: Api<Secret> = Api::namespaced(k8s.client(), "default");
    let all: Api<Secret> = Api::all(k8s.client());
    let lp = |s: &str| ListParams::default().labels(s);
    let fp = |s: &str| ListParams::default().fields(s);

    assert_eq!(names(&default, &lp("env=prod")).await, ["a"]);
    assert_eq!(names(&default, &lp("env==prod")).await, ["a"]);
    assert_eq!(
        names(&default, &lp("env!=prod")).await,
        ["b", "c", "d"],
        "!= matches a missing label"
    );
    assert_eq!(names(&default, &lp("env in (prod, dev)")).await, ["a", "b"]);
    assert_eq!(
        names(&default, &lp("env notin (prod)")).await,
        ["b", "c", "d"]
    );
    assert_eq!(names(&default, &lp("env")).await, ["a", "b", "c"]);
    assert_eq!(names(&default, &lp("!env")).await, ["d"]);
    assert_eq!(
        names(&default, &lp("env,tier=web,env notin (dev)")).await,
        ["a"]
    );
    assert_eq!(names(&default, &lp("count>5")).await, ["d"]);
    assert_eq!(names(&default, &lp("count<5")).await, Vec::<String>::new());
    assert_eq!(
        names(&all, &lp("env=prod")).await,
        ["a", "e"],
        "all namespaces"
    );

    assert_eq!(names(&default, &fp("metadata.name=b")).await, ["b"]);
    assert_eq!(
        names(&default, &fp("metadata.name!=b")).await,
        ["a", "c", "d"]
    );
    assert_eq!(names(&all, &fp("metadata.namespace=other")).await, ["e"]);
    assert_eq!(
        names(&all, &fp("metadata.namespace!=other,metadata.name!=a")).await,
        ["b", "c", "d"]
    );
    assert_eq!(
        names(&default, &fp("type=kubernetes.io/ssh-auth")).await,
        ["c"]
    );

    let bad_label = api_error(default.list(&lp("env in prod")).await.unwrap_err());
    assert_eq!(
        (bad_label.code, bad_label.reason.as_str()),
        (400, "BadRequest")
    );
    let bad_field = api_error(default.list(&fp("spec.nope=1")).await.unwrap_err());
    assert_eq!(bad_field.code, 400);
    assert_eq!(bad_field.message, "field label not supported: spec.nope");
}

#[tokio::test]
async fn list_shape_and_pagination() {
    let k8s = StandIn::start().await;
    for i in 0..7 {
        k8s.seed(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("s{i}"), "namespace": "default"}}));
    }
    let listed = raw(&k8s, "GET", "/api/v1/namespaces/default/secrets", &[], None).await;
    let list = listed.json();
    assert_eq!(list["kind"], "SecretList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(
        list["metadata"]["resourceVersion"],
        k8s.resource_version().to_string()
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 7);
    for item in list["items"].as_array().unwrap() {
        assert_eq!(item["kind"], "Secret");
        assert_eq!(item["apiVersion"], "v1");
    }

    let secrets: Api<Secret> = Api::namespaced(k8s.client(), "default");
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    let first = secrets.list(&lp).await.unwrap();
    let list_rv = first.metadata.resource_version.clone();
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let mut page = first;
    loop {
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|s| s.metadata.name.clone().unwrap()));
        assert_eq!(
            page.metadata.resource_version, list_rv,
            "every page reports the list's RV"
        );
        match page.metadata.continue_.clone().filter(|c| !c.is_empty()) {
            Some(token) => {
                // A write between pages does not disturb the cursor.
                k8s.seed(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm{}", seen.len()), "namespace": "default"}}));
                lp = lp.continue_token(&token);
                page = secrets.list(&lp).await.unwrap();
            }
            None => break,
        }
    }
    assert_eq!(seen, ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);
    assert_eq!(k8s.count("list", "secrets"), 4);

    let bad = raw(
        &k8s,
        "GET",
        "/api/v1/namespaces/default/secrets?limit=2&continue=garbage",
        &[],
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
}

// ---------------------------------------------------------------------------------------------
// Watches
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn watch_replays_history_and_synthesises_initial_state() {
    let k8s = StandIn::start().await;
    let a = k8s.seed(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a", "namespace": "default"}}));
    let after_a = rv(&a);
    k8s.seed(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b", "namespace": "default"}}));
    k8s.seed(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x", "namespace": "other"}}));
    k8s.seed(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "default"}}));
    k8s.seed(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a", "namespace": "default", "labels": {"v": "2"}}}));
    k8s.remove("secrets", Some("default"), "b");

    // From a resourceVersion: every later event for this resource and namespace, in order.
    let replay = raw(
        &k8s,
        "GET",
        &format!("/api/v1/namespaces/default/secrets?watch=true&resourceVersion={after_a}&timeoutSeconds=1"),
        &[],
        None,
    )
    .await;
    assert_eq!(replay.status, 200);
    let events = replay.events();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ADDED".into(), "b".into()),
            ("MODIFIED".into(), "a".into()),
            ("DELETED".into(), "b".into())
        ]
    );
    let rvs: Vec<u64> = events.iter().map(|e| rv(&e["object"])).collect();
    assert!(
        rvs.windows(2).all(|w| w[0] < w[1]),
        "increasing resourceVersions: {rvs:?}"
    );
    assert_eq!(
        *rvs.last().unwrap(),
        k8s.resource_version(),
        "DELETED carries the deletion's RV"
    );

    // Without a resourceVersion (or "0"): ADDED for what exists now, across namespaces here.
    for query in [
        "watch=true&timeoutSeconds=1",
        "watch=1&resourceVersion=0&timeoutSeconds=1",
    ] {
        let initial = raw(&k8s, "GET", &format!("/api/v1/secrets?{query}"), &[], None).await;
        let names: Vec<(String, String)> = initial
            .events()
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_string(),
                    e["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [("ADDED".into(), "a".into()), ("ADDED".into(), "x".into())],
            "{query}"
        );
    }
    assert_eq!(k8s.count("watch", "secrets"), 3);
}

#[tokio::test]
async fn watch_from_expired_resource_version_is_gone() {
    let k8s = StandIn::start().await;
    let first = k8s.seed(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c0", "namespace": "default"}}));
    let old = rv(&first);
    k8s.set_history_limit(3);
    for i in 1..=5 {
        k8s.seed(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}"), "namespace": "default"}}));
    }
    let oldest_kept = k8s.resource_version() - 3;
    let gone = raw(
        &k8s,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={old}"),
        &[],
        None,
    )
    .await;
    assert_eq!(gone.status, 200, "the error arrives as a watch event");
    let events = gone.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "ERROR");
    let status = &events[0]["object"];
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 410);
    assert_eq!(status["reason"], "Expired");
    assert_eq!(
        status["message"],
        format!("too old resource version: {old} ({oldest_kept})")
    );

    // Within the window it still replays.
    let fine = raw(
        &k8s,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={oldest_kept}&timeoutSeconds=1"),
        &[],
        None,
    )
    .await;
    assert_eq!(fine.events().len(), 3);

    // kube's typed watch surfaces it as WatchEvent::Error.
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(k8s.client(), "default");
    let mut stream = api
        .watch(&WatchParams::default(), &old.to_string())
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => assert_eq!(status.code, 410),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_streams_live_events_bookmarks_and_selector_transitions() {
    let k8s = StandIn::start().await;
    k8s.set_bookmark_interval(Duration::from_millis(200));
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), "default");
    let start = k8s.resource_version().to_string();
    let wp = WatchParams::default().labels("app=web").timeout(10);
    let mut stream = secrets.watch(&wp, &start).await.unwrap().boxed();

    let mut s = secret("w", &[]);
    s.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
    secrets.create(&PostParams::default(), &s).await.unwrap();
    // Not matching: never delivered.
    secrets
        .create(&PostParams::default(), &secret("other", &[]))
        .await
        .unwrap();
    // Stops matching: DELETED; starts matching again: ADDED.
    secrets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
        )
        .await
        .unwrap();
    secrets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "web", "v": "2"}}})),
        )
        .await
        .unwrap();
    secrets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"v": "3"}}})),
        )
        .await
        .unwrap();
    secrets.delete("w", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    let mut bookmark_rv = None;
    // All writes are done: wait for the five events and a bookmark at the final resourceVersion
    // (an earlier bookmark may report an intermediate one).
    let final_rv = k8s.resource_version().to_string();
    while seen.len() < 5 || bookmark_rv.as_ref() != Some(&final_rv) {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("event within 5s")
            .unwrap()
            .expect("stream open");
        match event {
            WatchEvent::Added(s) => seen.push(("ADDED", s.metadata.labels.unwrap()["app"].clone())),
            WatchEvent::Modified(s) => {
                seen.push(("MODIFIED", s.metadata.labels.unwrap()["app"].clone()))
            }
            WatchEvent::Deleted(s) => {
                seen.push(("DELETED", s.metadata.labels.unwrap()["app"].clone()))
            }
            WatchEvent::Bookmark(b) => bookmark_rv = Some(b.metadata.resource_version),
            WatchEvent::Error(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "web".to_string()),
            // The DELETED for a selector transition carries the previous (matching) content.
            ("DELETED", "web".to_string()),
            ("ADDED", "web".to_string()),
            ("MODIFIED", "web".to_string()),
            ("DELETED", "web".to_string()),
        ]
    );
    assert_eq!(bookmark_rv, Some(final_rv));

    // A raw bookmark has only apiVersion, kind and metadata.resourceVersion.
    let raw_watch = raw(
        &k8s,
        "GET",
        &format!("/api/v1/namespaces/default/secrets?watch=true&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds=1", k8s.resource_version()),
        &[],
        None,
    )
    .await;
    let bookmarks: Vec<Value> = raw_watch
        .events()
        .into_iter()
        .filter(|e| e["type"] == "BOOKMARK")
        .collect();
    assert!(!bookmarks.is_empty());
    assert_eq!(
        bookmarks[0]["object"],
        json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"resourceVersion": k8s.resource_version().to_string()}})
    );
    assert_eq!(raw_watch.header("transfer-encoding"), Some("chunked"));
}

#[tokio::test]
async fn watch_honours_timeout_seconds() {
    let k8s = StandIn::start().await;
    let started = std::time::Instant::now();
    let response = raw(
        &k8s,
        "GET",
        "/api/v1/namespaces/default/secrets?watch=true&timeoutSeconds=1",
        &[],
        None,
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(response.status, 200);
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn kube_runtime_watcher_and_reflector_work() {
    let k8s = StandIn::start().await;
    for name in ["one", "two"] {
        k8s.seed(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}}));
    }
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), "default");
    let (store, writer) = reflector::store::<Secret>();
    let stream = reflector::reflector(writer, watcher(secrets.clone(), watcher::Config::default()))
        .applied_objects()
        .for_each(|_| async {});
    let driver = tokio::spawn(stream);

    let names = |store: &reflector::Store<Secret>| {
        let mut names: Vec<String> = store
            .state()
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        names
    };
    eventually("initial list", || names(&store) == ["one", "two"]).await;

    secrets
        .create(&PostParams::default(), &secret("three", &[]))
        .await
        .unwrap();
    eventually("create", || names(&store) == ["one", "three", "two"]).await;
    secrets
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"seen": "yes"}}})),
        )
        .await
        .unwrap();
    eventually("update", || {
        store.state().iter().any(|s| {
            s.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.get("seen").is_some_and(|v| v == "yes"))
        })
    })
    .await;
    secrets
        .delete("two", &DeleteParams::default())
        .await
        .unwrap();
    eventually("delete", || names(&store) == ["one", "three"]).await;

    assert!(k8s.count("list", "secrets") >= 1);
    assert!(k8s.count("watch", "secrets") >= 1);
    driver.abort();
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

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
    let expiry = time::OffsetDateTime::parse(
        response["status"]["expirationTimestamp"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expiry.unix_timestamp(), claims["exp"].as_i64().unwrap());

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

// ---------------------------------------------------------------------------------------------
// Resources, discovery, client configuration, counters
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cluster_scoped_and_custom_resources() {
    let k8s = StandIn::start().await;
    let client = k8s.client();
    let gvk = GroupVersionKind::gvk("secret-injector.io", "v1alpha1", "ClusterSecretStore");
    let cluster_stores: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    let mut store: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "secret-injector.io/v1alpha1", "kind": "ClusterSecretStore",
        "metadata": {"name": "vault"}, "spec": {"provider": "vault"}, "status": {"ready": true}
    }))
    .unwrap();
    let created = cluster_stores
        .create(&PostParams::default(), &store)
        .await
        .unwrap();
    assert_eq!(created.metadata.namespace, None);
    assert_eq!(created.metadata.generation, Some(1));
    assert!(
        created.data.get("status").is_none(),
        "custom resource status is dropped on create"
    );
    store.metadata.resource_version = created.metadata.resource_version.clone();
    store.data["spec"]["provider"] = json!("openbao");
    let updated = cluster_stores
        .replace("vault", &PostParams::default(), &store)
        .await
        .unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert!(k8s.object("clustersecretstores", None, "vault").is_some());
    let namespaced_path = raw(
        &k8s,
        "GET",
        "/apis/secret-injector.io/v1alpha1/namespaces/default/clustersecretstores",
        &[],
        None,
    )
    .await;
    assert_eq!(namespaced_path.status, 404);

    let ns_gvk = GroupVersionKind::gvk("secret-injector.io", "v1alpha1", "SecretStore");
    let stores: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "team", &ApiResource::from_gvk(&ns_gvk));
    let mut ns_store = store.clone();
    ns_store.types = Some(kube::api::TypeMeta {
        api_version: "secret-injector.io/v1alpha1".into(),
        kind: "SecretStore".into(),
    });
    ns_store.metadata.resource_version = None;
    let created = stores
        .create(&PostParams::default(), &ns_store)
        .await
        .unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("team"));

    // Namespaces themselves are cluster-scoped and pre-populated like a fresh cluster.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    for expected in ["default", "kube-system", "secret-injector"] {
        assert!(names.contains(&expected.to_string()), "{names:?}");
    }
    assert!(k8s
        .object(
            "serviceaccounts",
            Some("secret-injector"),
            "secret-injector"
        )
        .is_some());

    // The two Event APIs are separate stores.
    k8s.seed(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}}));
    assert_eq!(k8s.objects("events.events.k8s.io").len(), 1);
    assert_eq!(k8s.objects("events").len(), 0);
    // Leases are created by PUT, as on the real server.
    let lease = raw(
        &k8s,
        "PUT",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/leader",
        &[("Content-Type", "application/json")],
        Some(r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"leader"},"spec":{"holderIdentity":"me"}}"#),
    )
    .await;
    assert_eq!(lease.status, 201);

    // Opt-in NamespaceLifecycle check.
    let secrets: Api<Secret> = Api::namespaced(client, "nowhere");
    secrets
        .create(&PostParams::default(), &secret("free", &[]))
        .await
        .unwrap();
    k8s.require_namespaces(true);
    let err = api_error(
        secrets
            .create(&PostParams::default(), &secret("blocked", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "namespaces \"nowhere\" not found");
}

#[tokio::test]
async fn seed_object_and_remove_helpers() {
    let k8s = StandIn::start().await;
    let seeded = k8s.seed(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s"}, "stringData": {"k": "v"}}));
    assert_eq!(seeded["metadata"]["namespace"], "default");
    assert_eq!(seeded["data"]["k"], "dg==");
    assert!(seeded["metadata"]["uid"].as_str().is_some());
    assert!(seeded["metadata"]["creationTimestamp"].as_str().is_some());
    assert_eq!(rv(&seeded), k8s.resource_version());
    let reseeded = k8s.seed(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "default"}, "data": {}}));
    assert_eq!(
        reseeded["metadata"]["uid"], seeded["metadata"]["uid"],
        "re-seeding keeps the uid"
    );
    let deployment = k8s.seed(deployment("d", "i"));
    assert_eq!(deployment["metadata"]["generation"], 1);
    assert_eq!(
        deployment["status"]["replicas"], 99,
        "seed stores status as given"
    );
    assert_eq!(k8s.objects("deployments").len(), 1);
    assert!(k8s
        .object("deployments.apps", Some("default"), "d")
        .is_some());

    let since = k8s.resource_version();
    k8s.remove("secrets", Some("default"), "s");
    assert!(k8s.object("secrets", Some("default"), "s").is_none());
    let events = raw(
        &k8s,
        "GET",
        &format!("/api/v1/secrets?watch=true&resourceVersion={since}&timeoutSeconds=1"),
        &[],
        None,
    )
    .await
    .events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "DELETED");
    assert_eq!(k8s.total_requests(), 1, "helpers are not counted");
}

#[tokio::test]
async fn discovery_and_health_are_served_but_not_counted() {
    let k8s = StandIn::start().await;
    let client = k8s.client();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    let core = client.list_core_api_versions().await.unwrap();
    assert_eq!(core.versions, ["v1"]);
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "apps"));
    assert!(groups.groups.iter().any(|g| g.name == "secret-injector.io"));
    let apps = client.list_api_group_resources("apps/v1").await.unwrap();
    assert!(apps
        .resources
        .iter()
        .any(|r| r.name == "deployments/status"));
    let core_resources = client.list_core_api_resources("v1").await.unwrap();
    assert!(core_resources
        .resources
        .iter()
        .any(|r| r.name == "serviceaccounts/token"));
    assert_eq!(raw(&k8s, "GET", "/healthz", &[], None).await.body, "ok");
    assert_eq!(k8s.total_requests(), 0);
}

#[tokio::test]
async fn kubeconfig_is_usable_by_config_infer() {
    let k8s = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    k8s.write_kubeconfig(&path);
    // The only test in this binary that reads KUBECONFIG.
    std::env::set_var("KUBECONFIG", &path);
    let config = kube::Config::infer().await.expect("infer from KUBECONFIG");
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        k8s.url()
    );
    let client = kube::Client::try_from(config).unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces.get("default").await.unwrap();
    assert_eq!(k8s.count("get", "namespaces"), 1);
}

#[tokio::test]
async fn counters_and_injected_failures() {
    let k8s = StandIn::start().await;
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), "default");
    secrets
        .create(&PostParams::default(), &secret("c", &[]))
        .await
        .unwrap();
    secrets.get("c").await.unwrap();
    secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(k8s.total_requests(), 3);
    assert_eq!(
        k8s.counts(),
        BTreeMap::from([
            (("create".to_string(), "secrets".to_string()), 1),
            (("get".to_string(), "secrets".to_string()), 1),
            (("list".to_string(), "secrets".to_string()), 1),
        ])
    );
    k8s.reset_counts();
    assert_eq!(k8s.total_requests(), 0);
    assert_eq!(k8s.writes("secrets"), 0);

    k8s.fail_next("get", "secrets", 500, 2);
    for _ in 0..2 {
        let err = api_error(secrets.get("c").await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    }
    secrets.get("c").await.unwrap();
    assert_eq!(k8s.count("get", "secrets"), 3);
}

#[tokio::test]
async fn dropping_the_stand_in_stops_the_server() {
    let k8s = StandIn::start().await;
    let client = k8s.client();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let mut stream = secrets
        .watch(&WatchParams::default().timeout(60), "0")
        .await
        .unwrap()
        .boxed();
    let addr = k8s.url().trim_start_matches("http://").to_string();
    drop(k8s);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.try_next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "open watches end when the stand-in is dropped"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn metadata_only_requests_get_partial_object_metadata() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, ListParams};
    use kube::core::PartialObjectMeta;
    let standin = StandIn::start().await;
    standin.seed(serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default", "labels": {"a": "b"}}, "data": {"k": "c2VjcmV0"}}));
    // Raw: the body carries no data at all.
    let raw = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/namespaces/default/secrets",
            standin.url()
        ))
        .header(
            "accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        raw.contains("PartialObjectMetadataList") && !raw.contains("c2VjcmV0"),
        "{raw}"
    );
    // Typed, list and watch, as kube-runtime's metadata watcher uses them.
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(standin.client(), "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("s"));
    let mut events = kube::runtime::watcher(api, kube::runtime::watcher::Config::default()).boxed();
    let mut seen = false;
    while let Some(Ok(e)) = events.next().await {
        match e {
            kube::runtime::watcher::Event::InitApply(o) => {
                assert_eq!(o.metadata.labels.unwrap()["a"], "b");
                seen = true;
            }
            kube::runtime::watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert!(seen);
}
