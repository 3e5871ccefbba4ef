//! Write semantics: generateName, dry run, generation and status, no-op updates, patch
//! content types, delete preconditions and finalizers.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use k8s_standin::StandIn;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use crate::helpers::{api_error, deployment, raw, rv, secret};

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
