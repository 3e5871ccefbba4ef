//! Only the API server's requests may cause side effects: forged reviews against the real
//! binary (issue 9, findings 1, 2 and 7), warm admissions that make no API request at any
//! age, and readiness that waits for every watch of the index (issue 12).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_standin::StandIn;
use serde_json::{json, Value};
use support::{spawn_webhook, start_webhook};
use test_rig::payments::*;
use test_rig::webhook::Webhook;

const FAST: [&str; 8] = [
    "--min-refresh-interval",
    "1s",
    "--rollout-debounce",
    "1s",
    "--lease-duration",
    "3s",
    "--store-check-interval",
    "10m",
];

/// A TCP listener that counts the connections it accepts (and closes them).
async fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (format!("http://{addr}"), accepted)
}

fn vault_provider(server: &str) -> Value {
    json!({"vault": {"server": server, "path": "secret", "version": "v2",
        "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "any", "audiences": ["vault"]}}}})
}

/// A review of a bare pod named `lonely-pod` in `namespace`, running as `service_account`.
fn forged_review(uid: &str, namespace: &str, service_account: &str, store: &str) -> Value {
    let mut review = pod_review(
        uid,
        None,
        service_account,
        json!({"secret-injector.io/store": store, "secret-injector.io/env.TOKEN": "any/path#token"}),
    );
    review["request"]["namespace"] = json!(namespace);
    review["request"]["object"]["metadata"]["namespace"] = json!(namespace);
    review
}

fn denial(response: &Value) -> String {
    assert_eq!(response["allowed"], false, "{response}");
    response["status"]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn forged_reviews_for_namespaces_that_did_not_opt_in_cause_nothing() {
    let standin = StandIn::start().await;
    let (server, accepted) = counting_listener().await;
    // A ClusterSecretStore without conditions: every namespace may name it.
    standin.seed(
        json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "ClusterSecretStore",
        "metadata": {"name": "open"}, "spec": {"provider": vault_provider(&server)}}),
    );
    standin.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "vault-reviewer", "namespace": "kube-system"}}));
    standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "scratch"}}));
    standin.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "scratch"}}));
    standin.seed(json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "local", "namespace": "scratch"}, "spec": {"provider": vault_provider(&server)}}));
    // kube-system labelled as if opted in: system namespaces are excluded whatever they say.
    standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system", "labels": {"secret-injector.io/inject": "enabled"}}}));
    // Another replica leads, so this one runs no store status probes: every connection the
    // listener sees would come from admission.
    standin.seed(
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "secret-injector-leader", "namespace": "secret-injector"},
        "spec": {"holderIdentity": "another-replica", "leaseDurationSeconds": 3600,
            "renewTime": k8s_openapi::jiff::Timestamp::now().to_string()}}),
    );
    let webhook = start_webhook(&standin, &[]).await;

    let cases = [
        (
            "kube-system",
            "vault-reviewer",
            "ClusterSecretStore/open",
            "is never injected",
        ),
        (
            "secret-injector",
            "secret-injector",
            "ClusterSecretStore/open",
            "is never injected",
        ),
        (
            "scratch",
            "default",
            "local",
            "is not labelled secret-injector.io/inject=enabled",
        ),
        (
            "scratch",
            "default",
            "ClusterSecretStore/open",
            "is not labelled",
        ),
    ];
    for (i, (namespace, sa, store, expected)) in cases.into_iter().enumerate() {
        let review = forged_review(&format!("forged-{i}"), namespace, sa, store);
        let (_, response) = webhook.mutate(&review).await;
        let message = denial(&response);
        assert!(message.contains(expected), "{namespace}: {message}");
    }
    assert!(standin.token_requests().is_empty(), "no TokenRequest");
    assert_eq!(standin.count("create", "serviceaccounts/token"), 0);
    assert_eq!(standin.writes("secrets"), 0);
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no backend connection");
}

fn secret(rig: &Rig, name: &str) -> Value {
    rig.standin
        .object("secrets", Some(NS), name)
        .expect("managed Secret")
}

fn db_annotations(interval: &str) -> Value {
    json!({
        "secret-injector.io/store": "vault-backend",
        "secret-injector.io/env.DB_USERNAME": "payments/db#username",
        "secret-injector.io/env.DB_PASSWORD": "payments/db#password",
        "secret-injector.io/refresh-interval": interval
    })
}

async fn admit(rig: &Rig, webhook: &Webhook, uid: &str, annotations: Value) -> Value {
    let rs_uid = rig.replicaset_uid(REPLICASET);
    let (_, response) = webhook
        .mutate(&pod_review(
            uid,
            Some((REPLICASET, &rs_uid)),
            SA,
            annotations,
        ))
        .await;
    response
}

#[tokio::test]
async fn a_forged_owner_uid_is_denied_and_the_victim_secret_is_left_alone() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    let response = admit(&rig, &webhook, "legit", db_annotations("2s")).await;
    assert_eq!(response["allowed"], true, "{response}");
    let before = secret(&rig, "payments-api-injected");

    // The attacker's pod names the victim's Deployment (and, separately, its ReplicaSet) with
    // a made-up uid, and maps the victim's key names to another path the SA can read.
    let attack = json!({
        "secret-injector.io/store": "vault-backend",
        "secret-injector.io/secret-name": "payments-api-injected",
        "secret-injector.io/env.DB_USERNAME": "payments/fraud-feed#api_key",
        "secret-injector.io/env.DB_PASSWORD": "payments/fraud-feed#endpoint",
        "secret-injector.io/refresh-interval": "2s"
    });
    let writes_before = rig.standin.writes("secrets");
    for (kind, name, api_version) in [
        ("Deployment", DEPLOYMENT, "apps/v1"),
        ("ReplicaSet", REPLICASET, "apps/v1"),
    ] {
        let mut review = pod_review("forged", None, SA, attack.clone());
        let meta = &mut review["request"]["object"]["metadata"];
        meta["ownerReferences"] = json!([{"apiVersion": api_version, "kind": kind, "name": name,
            "uid": "00000000-dead-beef-0000-000000000000", "controller": true}]);
        let (_, response) = webhook.mutate(&review).await;
        let message = denial(&response);
        assert!(
            message.contains(&format!("owner {kind} {name} with uid 00000000-dead-beef"))
                && message.contains("does not exist"),
            "{message}"
        );
    }
    assert_eq!(rig.standin.writes("secrets"), writes_before);

    // Several refresher cycles later the victim Secret is still there, byte for byte.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = secret(&rig, "payments-api-injected");
    assert_eq!(after["data"], before["data"]);
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(
        after["metadata"]["ownerReferences"],
        before["metadata"]["ownerReferences"]
    );
    assert_eq!(rig.standin.count("delete", "secrets"), 0);
}

/// Every request since the last reset, except the leader's Lease renewals.
fn api_requests(standin: &StandIn) -> Vec<((String, String), u64)> {
    standin
        .counts()
        .into_iter()
        .filter(|((_, resource), n)| resource != "leases" && *n > 0)
        .collect()
}

#[tokio::test]
async fn a_warm_admission_makes_no_api_request_after_every_former_ttl() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &FAST).await;
    let response = admit(&rig, &webhook, "cold", db_annotations("1h")).await;
    assert_eq!(response["allowed"], true, "{response}");
    let response = admit(&rig, &webhook, "warm-1", db_annotations("1h")).await;
    assert_eq!(response["allowed"], true, "{response}");

    rig.standin.reset_counts();
    // Past the old 5 s store TTL and 30 s owner TTL.
    tokio::time::sleep(Duration::from_secs(32)).await;
    rig.standin.reset_counts();
    let response = admit(&rig, &webhook, "warm-2", db_annotations("1h")).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_some(), "{response}");
    // Let anything the admission might have started in the background land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        api_requests(&rig.standin),
        vec![],
        "{:?}",
        rig.standin.counts()
    );
    assert!(
        rig.standin.token_requests().len() <= 1,
        "only the cold admission's"
    );
}

#[tokio::test]
async fn readiness_waits_for_every_watch_of_the_index() {
    let standin = StandIn::start().await;
    standin.hold_reads("replicasets", true);
    standin.hold_reads("clustersecretstores", true);
    let webhook = spawn_webhook(&standin, &[]);
    // The API answers, the other watches sync: still not ready.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert!(!webhook.is_ready().await, "ready with watches held");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(standin.count("list", "replicasets") >= 1, "the index asked");
    standin.hold_reads("replicasets", false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!webhook.is_ready().await, "ready with a store watch held");
    standin.hold_reads("clustersecretstores", false);
    webhook.wait_ready().await;
}

fn bare_review(uid: &str, annotations: Value) -> Value {
    let mut review = pod_review(uid, None, SA, annotations);
    let meta = review["request"]["object"]["metadata"]
        .as_object_mut()
        .unwrap();
    meta.remove("name");
    meta.insert("generateName".into(), json!("batch-"));
    review
}

fn password(rig: &Rig, name: &str) -> Option<String> {
    let secret = rig.standin.object("secrets", Some(NS), name)?;
    secret_data(&secret).get("DB_PASSWORD").cloned()
}

#[tokio::test]
async fn a_generate_name_bare_pod_is_refreshed_on_rotation_and_cleaned_up() {
    let rig = Rig::start().await;
    let webhook = start_webhook(&rig.standin, &FAST).await;

    // Without a Secret name: a clear denial, nothing written.
    let (_, response) = webhook
        .mutate(&bare_review("no-name", db_annotations("2s")))
        .await;
    let message = denial(&response);
    assert!(
        message.contains("generateName") && message.contains("secret-injector.io/secret-name"),
        "{message}"
    );
    assert_eq!(rig.standin.writes("secrets"), 0);

    let mut annotations = db_annotations("2s");
    annotations["secret-injector.io/secret-name"] = json!("batch-creds");
    let mut review = bare_review("named", annotations);
    let (_, response) = webhook.mutate(&review).await;
    assert_eq!(response["allowed"], true, "{response}");
    let created = secret(&rig, "batch-creds");
    assert_eq!(
        created["metadata"]["annotations"]["secret-injector.io/owner"],
        "Pod/batch-"
    );
    assert_eq!(password(&rig, "batch-creds").as_deref(), Some(DB_PASSWORD));

    // The API server stores the pod under its final name.
    apply_patch(&mut review, &response);
    let mut pod = review["request"]["object"].clone();
    pod["metadata"]["name"] = json!("batch-x7k2p");
    pod["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("generateName");
    let pod = rig.standin.seed(pod);
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap().to_string();

    wait_for(
        "the pod to adopt its Secret",
        Duration::from_secs(10),
        || {
            let s = secret(&rig, "batch-creds");
            s["metadata"]["ownerReferences"][0]["uid"] == pod_uid.as_str()
                && s["metadata"]["annotations"]["secret-injector.io/owner"] == "Pod/batch-x7k2p"
        },
    )
    .await;

    rig.bao
        .kv_put(
            "secret",
            2,
            "payments/db",
            json!({"username": DB_USERNAME, "password": "rotated_SENTINEL_bare_3"}),
        )
        .await;
    wait_for("the rotated value", Duration::from_secs(10), || {
        password(&rig, "batch-creds").as_deref() == Some("rotated_SENTINEL_bare_3")
    })
    .await;

    rig.standin.remove("pods", Some(NS), "batch-x7k2p");
    for _ in 0..100 {
        if rig
            .standin
            .object("secrets", Some(NS), "batch-creds")
            .is_none()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs: Vec<_> = webhook
        .logs()
        .lines()
        .filter(|l| {
            !l.contains("\"TRACE\"")
                && !l.contains("leases")
                && (l.contains("batch") || !l.contains("\"DEBUG\""))
        })
        .map(String::from)
        .collect();
    let metrics = webhook.metrics().await;
    let refreshes: Vec<_> = metrics
        .lines()
        .filter(|l| l.contains("refreshes_total"))
        .collect();
    panic!(
        "the orphan was not collected within 10s; {refreshes:?} {:?}\n{}",
        rig.standin.counts(),
        logs[logs.len().saturating_sub(30)..].join("\n")
    );
}
