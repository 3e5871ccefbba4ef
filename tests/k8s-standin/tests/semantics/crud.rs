//! Create/read/update/delete through a typed client: metadata, Status error bodies,
//! Secret type and immutability.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use k8s_standin::StandIn;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::helpers::{api_error, raw, secret};

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
