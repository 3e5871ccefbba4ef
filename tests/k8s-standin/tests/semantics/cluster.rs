//! Cluster-scoped and custom resources, direct helpers, discovery, kubeconfig, counters,
//! shutdown and metadata-only requests.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_standin::StandIn;
use kube::api::{Api, DynamicObject, ListParams, PostParams, WatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use crate::helpers::{api_error, deployment, raw, rv, secret};

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

#[tokio::test]
async fn held_reads_wait_until_released_and_then_see_the_current_state() {
    let k8s = StandIn::start().await;
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), "default");
    k8s.hold_reads("secrets", true);
    let list = tokio::spawn({
        let secrets = secrets.clone();
        async move { secrets.list(&ListParams::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!list.is_finished(), "a held list was answered");
    assert_eq!(k8s.count("list", "secrets"), 1, "counted on arrival");
    // Other resources and other verbs are served as usual.
    let namespaces: Api<Namespace> = Api::all(k8s.client());
    assert!(!namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    k8s.seed(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "late", "namespace": "default"}}));
    k8s.hold_reads("secrets", false);
    let listed = tokio::time::timeout(Duration::from_secs(5), list)
        .await
        .expect("answered once released")
        .unwrap()
        .unwrap();
    let names: Vec<_> = listed
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(names, ["late"], "the state when released");
}
