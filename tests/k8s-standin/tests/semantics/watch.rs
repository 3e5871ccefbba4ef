//! Watches: history replay, `410 Expired`, live events, bookmarks, selector transitions,
//! timeouts, and kube-runtime's watcher and reflector.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_standin::StandIn;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::{json, Value};

use crate::helpers::{eventually, raw, rv, secret};

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
