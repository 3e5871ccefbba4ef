//! Events end to end, the real binary against the stand-in: `Injected` and `InjectionDenied`
//! on the owning workload (aggregated, none on dry-run, no values), and the leader's
//! missed-injection detector (`InjectionMissed`, `NamespaceNotOptedIn`, the metric).

mod support;

use std::time::Duration;

use k8s_standin::StandIn;
use serde_json::{json, Value};
use support::start_webhook;
use test_rig::payments::*;

const SENTINELS: [&str; 3] = [DB_USERNAME, DB_PASSWORD, FEED_KEY];

fn events(standin: &StandIn, reason: &str) -> Vec<Value> {
    standin
        .objects("events.events.k8s.io")
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

fn short_form() -> Value {
    json!({
        "secret-injector.io/store": "vault-backend",
        "secret-injector.io/env.DB_USERNAME": "payments/db#username",
        "secret-injector.io/env.DB_PASSWORD": "payments/db#password",
        "secret-injector.io/file.FEED_KEY": "payments/fraud-feed#api_key",
    })
}

fn series_count(event: &Value) -> i64 {
    event["series"]["count"].as_i64().unwrap_or(1)
}

#[tokio::test]
async fn an_injected_pod_is_one_injected_event_on_its_deployment_without_values() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &["--event-aggregation-interval", "1s"]).await;
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let deployment_uid = rig
        .standin
        .object("deployments", Some(NS), DEPLOYMENT)
        .unwrap()["metadata"]["uid"]
        .clone();

    let (body, response) = webhook
        .mutate(&pod_review(
            "uid-1",
            Some((REPLICASET, &rs_uid)),
            SA,
            short_form(),
        ))
        .await;
    assert_eq!(response["allowed"], true, "{body}");
    assert!(response.get("patch").is_some(), "{body}");
    wait_for("the Injected Event", Duration::from_secs(10), || {
        !events(&rig.standin, "Injected").is_empty()
    })
    .await;
    let injected = events(&rig.standin, "Injected");
    assert_eq!(injected.len(), 1, "{injected:?}");
    let e = &injected[0];
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["regarding"]["kind"], "Deployment");
    assert_eq!(e["regarding"]["name"], DEPLOYMENT);
    assert_eq!(e["regarding"]["uid"], deployment_uid);
    assert_eq!(e["reportingController"], "secret-injector");
    assert_eq!(
        e["note"],
        "pod injected with managed Secret(s) payments-api-injected"
    );

    // A second pod of the same workload: the same Event, counted, not a second one.
    let (_, again) = webhook
        .mutate(&pod_review(
            "uid-2",
            Some((REPLICASET, &rs_uid)),
            SA,
            short_form(),
        ))
        .await;
    assert_eq!(again["allowed"], true);
    wait_for("the count to reach 2", Duration::from_secs(10), || {
        events(&rig.standin, "Injected")
            .first()
            .is_some_and(|e| series_count(e) == 2)
    })
    .await;
    assert_eq!(events(&rig.standin, "Injected").len(), 1);

    // Sentinel: no value, token or digest in any Event.
    let secret = rig
        .standin
        .object("secrets", Some(NS), "payments-api-injected")
        .unwrap();
    let digest = secret["metadata"]["annotations"]["secret-injector.io/data-hmac"]
        .as_str()
        .unwrap()
        .to_string();
    let all = serde_json::to_string(&rig.standin.objects("events.events.k8s.io")).unwrap();
    assert_no_leak("events", &all, &SENTINELS);
    assert!(!all.contains(&digest), "an Event carries the digest");
    assert!(!all.contains("eyJ"), "an Event carries a JWT");
}

/// A labelled namespace with a Deployment and its ReplicaSet and no SecretStore, so every
/// admission is denied before any backend is involved; returns the ReplicaSet's uid.
fn seed_denied(standin: &StandIn) -> String {
    standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"secret-injector.io/inject": "enabled"}}}));
    standin.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA, "namespace": NS}}));
    let d = standin.seed(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": DEPLOYMENT, "namespace": NS}, "spec": {"selector": {}, "template": {}}}));
    let rs = standin.seed(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": REPLICASET, "namespace": NS,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT, "uid": d["metadata"]["uid"], "controller": true}]},
        "spec": {"selector": {}}}));
    rs["metadata"]["uid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_denial_is_one_injection_denied_event_with_the_message_and_dry_run_makes_none() {
    let standin = StandIn::start().await;
    let rs_uid = seed_denied(&standin);
    let webhook = start_webhook(&standin, &[]).await;

    let mut dry = pod_review("uid-dry", Some((REPLICASET, &rs_uid)), SA, short_form());
    dry["request"]["dryRun"] = json!(true);
    let (_, response) = webhook.mutate(&dry).await;
    assert_eq!(response["allowed"], false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        events(&standin, "InjectionDenied").is_empty(),
        "an Event for a dry run"
    );

    let (_, response) = webhook
        .mutate(&pod_review(
            "uid-1",
            Some((REPLICASET, &rs_uid)),
            SA,
            short_form(),
        ))
        .await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("vault-backend"), "{message}");
    wait_for("the InjectionDenied Event", Duration::from_secs(10), || {
        !events(&standin, "InjectionDenied").is_empty()
    })
    .await;
    let denied = events(&standin, "InjectionDenied");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["type"], "Warning");
    assert_eq!(denied[0]["note"], message.as_str());
    assert_eq!(denied[0]["regarding"]["kind"], "Deployment");
    assert_eq!(denied[0]["regarding"]["name"], DEPLOYMENT);
    assert!(events(&standin, "Injected").is_empty());
}

#[tokio::test]
async fn a_burst_of_denials_costs_a_bounded_number_of_event_writes() {
    let standin = StandIn::start().await;
    let rs_uid = seed_denied(&standin);
    let webhook = start_webhook(&standin, &["--event-aggregation-interval", "2s"]).await;
    standin.reset_counts();

    let started = std::time::Instant::now();
    let mut denied = 0;
    for batch in 0..10 {
        let reviews: Vec<Value> = (0..10)
            .map(|i| {
                pod_review(
                    &format!("uid-{batch}-{i}"),
                    Some((REPLICASET, &rs_uid)),
                    SA,
                    short_form(),
                )
            })
            .collect();
        let answers = futures::future::join_all(reviews.iter().map(|r| webhook.mutate(r))).await;
        denied += answers
            .iter()
            .filter(|(_, r)| r["allowed"] == false)
            .count();
    }
    assert_eq!(denied, 100);
    wait_for("the aggregated count", Duration::from_secs(15), || {
        events(&standin, "InjectionDenied")
            .first()
            .is_some_and(|e| series_count(e) == 100)
    })
    .await;
    let all = events(&standin, "InjectionDenied");
    assert_eq!(all.len(), 1, "one Event for one object, reason and message");
    let writes = standin.writes("events.events.k8s.io");
    // One create, then at most one count patch per aggregation interval (2 s) while the burst
    // and the final flush last: bounded by time, never by the number of denials.
    let intervals = (started.elapsed().as_secs_f64() / 2.0).ceil() as u64;
    assert!(
        writes >= 2 && writes <= 2 + intervals && writes <= 12,
        "100 denials cost {writes} Event writes over {intervals} intervals: {:?}",
        standin.counts()
    );
    assert_eq!(standin.count("create", "events.events.k8s.io"), 1);
}

#[tokio::test]
async fn the_detector_reports_missed_and_not_opted_in_workloads_once() {
    let standin = StandIn::start().await;
    let ours =
        json!({"secret-injector.io/store": "vault-backend", "secret-injector.io/env.A": "app/a#x"});
    let workload = |ns: &str, name: &str, pod_annotations: Value| {
        let d = standin.seed(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {}, "template": {"metadata": {"annotations": pod_annotations.clone()}}}}));
        let rs = standin.seed(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": format!("{name}-5d9c"), "namespace": ns,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": d["metadata"]["uid"], "controller": true}]},
            "spec": {"selector": {}}}));
        for i in 0..2 {
            standin.seed(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{name}-5d9c-{i}"), "namespace": ns,
                    "labels": {"pod-template-hash": "5d9c"}, "annotations": pod_annotations.clone(),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-5d9c"), "uid": rs["metadata"]["uid"], "controller": true}]},
                "spec": {"containers": [{"name": "app", "image": "x"}]}}));
        }
        d["metadata"]["uid"].as_str().unwrap().to_string()
    };
    standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments", "labels": {"secret-injector.io/inject": "enabled"}}}));
    standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "legacy"}}));
    // (a) annotated, opted-in namespace, never injected (the webhook was bypassed).
    let missed_uid = workload("payments", "web", ours.clone());
    // (b) annotated, namespace not opted in.
    let legacy_uid = workload("legacy", "billing", ours.clone());
    // Injected, opted out, and not annotated: nothing to say.
    let mut injected = ours.clone();
    injected["secret-injector.io/status"] = json!("injected");
    workload("payments", "fine", injected);
    let mut opted_out = ours.clone();
    opted_out["secret-injector.io/inject"] = json!("false");
    workload("payments", "quiet", opted_out);
    workload("legacy", "plain", json!({"team": "billing"}));
    // Opted out on the Deployment's own metadata, references on the template: not a miss.
    workload("payments", "muted", ours.clone());
    let mut muted = standin
        .object("deployments", Some("payments"), "muted")
        .unwrap();
    muted["metadata"]["annotations"] = json!({"secret-injector.io/inject": "false"});
    standin.seed(muted);

    let webhook = start_webhook(
        &standin,
        &[
            "--missed-injection-check-interval",
            "1s",
            "--lease-duration",
            "3s",
        ],
    )
    .await;
    wait_for("both Warning Events", Duration::from_secs(15), || {
        events(&standin, "InjectionMissed").len() == 1
            && events(&standin, "NamespaceNotOptedIn").len() == 1
    })
    .await;

    let missed = &events(&standin, "InjectionMissed")[0];
    assert_eq!(missed["type"], "Warning");
    assert_eq!(missed["regarding"]["kind"], "Deployment");
    assert_eq!(missed["regarding"]["name"], "web");
    assert_eq!(missed["regarding"]["uid"], missed_uid.as_str());
    assert_eq!(missed["metadata"]["namespace"], "payments");
    let legacy = &events(&standin, "NamespaceNotOptedIn")[0];
    assert_eq!(legacy["regarding"]["name"], "billing");
    assert_eq!(legacy["regarding"]["uid"], legacy_uid.as_str());
    assert!(
        legacy["note"]
            .as_str()
            .unwrap()
            .contains("namespace legacy is not labelled secret-injector.io/inject=enabled"),
        "{legacy}"
    );

    // Several more periods, a new pod of an already reported revision, and a bare pod.
    standin.seed(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-5d9c-2", "namespace": "payments", "labels": {"pod-template-hash": "5d9c"},
            "annotations": ours.clone(),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9c",
                "uid": standin.object("replicasets", Some("payments"), "web-5d9c").unwrap()["metadata"]["uid"], "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": "x"}]}}));
    let bare = standin.seed(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "lonely", "namespace": "payments", "annotations": ours.clone()},
        "spec": {"containers": [{"name": "app", "image": "x"}]}}));
    wait_for("the bare pod's Event", Duration::from_secs(10), || {
        events(&standin, "InjectionMissed").len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let missed = events(&standin, "InjectionMissed");
    assert_eq!(missed.len(), 2, "{missed:?}");
    let on_pod = missed
        .iter()
        .find(|e| e["regarding"]["kind"] == "Pod")
        .expect("the bare pod's Event");
    assert_eq!(on_pod["regarding"]["name"], "lonely");
    assert_eq!(on_pod["regarding"]["uid"], bare["metadata"]["uid"]);
    assert_eq!(events(&standin, "NamespaceNotOptedIn").len(), 1);
    for e in standin.objects("events.events.k8s.io") {
        assert!(e.get("series").is_none(), "reported more than once: {e}");
        for name in ["fine", "quiet", "plain", "muted"] {
            assert_ne!(e["regarding"]["name"], name, "{e}");
        }
    }

    let metrics = webhook.metrics().await;
    assert!(
        metrics.contains(r#"secret_injector_missed_injections_total{reason="InjectionMissed"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"secret_injector_missed_injections_total{reason="NamespaceNotOptedIn"} 1"#),
        "{metrics}"
    );
    // Metadata-only watches, no per-pod reads.
    assert_eq!(standin.count("get", "pods"), 0, "{:?}", standin.counts());
}
