//! SecretStore validation end to end: the `/validate` webhook over HTTPS with the fixture
//! table, the runtime allowlist check ordering, store status kept by the Lease holder.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_standin::StandIn;
use serde_json::{json, Value};
use support::start_webhook;
use test_rig::payments::*;

const STRICT: [&str; 4] = [
    "--allowed-vault-servers",
    "https://vault.vault.svc:8200,https://*.vault.example.com",
    "--allowed-aws-endpoints",
    "https://*.amazonaws.com",
];

fn store_review(uid: &str, operation: &str, object: &Value) -> Value {
    let kind = object["kind"].as_str().unwrap();
    let plural = if kind == "SecretStore" {
        "secretstores"
    } else {
        "clustersecretstores"
    };
    let gvk = json!({"group": "secret-injector.io", "version": "v1alpha1", "kind": kind});
    let gvr = json!({"group": "secret-injector.io", "version": "v1alpha1", "resource": plural});
    let mut request = json!({
        "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": object["metadata"]["name"], "operation": operation,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": object, "oldObject": if operation == "UPDATE" { object.clone() } else { Value::Null },
        "dryRun": false
    });
    if let Some(ns) = object["metadata"]["namespace"].as_str() {
        request["namespace"] = json!(ns);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

#[tokio::test]
async fn fixture_table_of_stores_through_validate_over_https() {
    let standin = StandIn::start().await;
    let webhook = start_webhook(&standin, &STRICT).await;
    let path = format!("{}/tests/fixtures/stores.json", env!("CARGO_MANIFEST_DIR"));
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.len() >= 25, "the table holds at least 25 stores");
    let kinds: std::collections::BTreeSet<_> = cases
        .iter()
        .map(|c| c["object"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "both kinds are covered");
    for (i, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let uid = format!("uid-store-{i}");
        let review = store_review(&uid, case["operation"].as_str().unwrap(), &case["object"]);
        let (status, body) = webhook
            .post("/validate", serde_json::to_vec(&review).unwrap())
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        let response: Value = serde_json::from_str::<Value>(&body).unwrap()["response"].clone();
        assert_eq!(response["uid"], uid.as_str(), "{name}: uid echoed");
        assert!(
            response.get("patch").is_none(),
            "{name}: a validating answer never carries a patch"
        );
        let message = response["status"]["message"].as_str().unwrap_or_default();
        match case["expect"].as_str().unwrap() {
            "allow" => assert_eq!(response["allowed"], true, "{name}: {message}"),
            _ => {
                assert_eq!(response["allowed"], false, "{name}");
                let field = case["field"].as_str().unwrap();
                assert!(
                    message.contains(&format!("{field}: ")),
                    "{name}: {message:?} should name {field}"
                );
            }
        }
        let warnings = response["warnings"].as_array().cloned().unwrap_or_default();
        let expected: Vec<&str> = case["warnings"]
            .as_array()
            .map(|w| w.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for w in &expected {
            assert!(
                warnings.iter().any(|x| x.as_str().unwrap().contains(w)),
                "{name}: warnings {warnings:?} lack {w:?}"
            );
        }
        if expected.is_empty() && case["expect"] == "allow" {
            assert!(
                warnings.is_empty(),
                "{name}: unexpected warnings {warnings:?}"
            );
        }
    }
    // Validation reads and writes nothing in the cluster.
    let writes: Vec<_> = standin
        .counts()
        .into_iter()
        .filter(|((verb, resource), n)| {
            *n > 0
                && resource != "leases"
                && ["create", "update", "patch", "delete"].contains(&verb.as_str())
        })
        .collect();
    assert!(
        writes.is_empty(),
        "validation wrote to the cluster: {writes:?}"
    );
    let metrics = webhook.metrics().await;
    assert!(
        metrics.contains(
            r#"secret_injector_admission_requests_total{webhook="validate",result="denied"}"#
        ),
        "{metrics}"
    );
}

/// A loopback listener that counts connections and answers nothing.
async fn counting_listener() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, count)
}

#[tokio::test]
async fn a_disallowed_store_is_refused_before_any_token_or_connection() {
    let rig = Rig::start().await;
    let (addr, connections) = counting_listener().await;
    // Only the real OpenBao is allowed.
    let allowed = rig.bao.addr();
    let webhook = start_webhook(&rig.standin, &["--allowed-vault-servers", &allowed]).await;
    // Stores created directly in the API, bypassing /validate (or predating the rule).
    rig.seed_store("rogue", json!({"server": format!("http://{addr}")}));
    rig.seed_store("metadata", json!({"server": "http://169.254.169.254"}));
    let rs_uid = rig.replicaset_uid(REPLICASET);
    for store in ["rogue", "metadata"] {
        let annotations = json!({"secret-injector.io/store": store, "secret-injector.io/env.DB_PASSWORD": "payments/db#password"});
        let (_, response) = webhook
            .mutate(&pod_review(
                &format!("uid-{store}"),
                Some((REPLICASET, &rs_uid)),
                SA,
                annotations,
            ))
            .await;
        assert_eq!(response["allowed"], false, "{store}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("SecretStore {store} is invalid"))
                && message.contains("spec.provider.vault.server"),
            "{message}"
        );
    }
    assert!(
        rig.standin.token_requests().is_empty(),
        "no TokenRequest for a disallowed store"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no connection to a disallowed address"
    );
    assert_eq!(rig.standin.writes("secrets"), 0);
    // The allowed store still works.
    let (_, ok) = webhook.mutate(&pod_review("uid-ok", Some((REPLICASET, &rs_uid)), SA, json!({"secret-injector.io/store": "vault-backend", "secret-injector.io/env.DB_PASSWORD": "payments/db#password"}))).await;
    assert_eq!(ok["allowed"], true);
    // Status probes honour the allowlist too: the rogue store is never probed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

fn ready(
    standin: &StandIn,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<(String, String)> {
    let obj = standin.object(resource, namespace, name)?;
    let c = obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .clone();
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
    ))
}

#[tokio::test]
async fn the_leader_keeps_store_status_current() {
    let mut rig = Rig::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    rig.seed_store("closed-port", json!({"server": format!("http://{closed}")}));
    rig.seed_store("invalid", json!({"path": "secret/data"}));
    rig.standin.seed(json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "ClusterSecretStore", "metadata": {"name": "shared"},
        "spec": {"provider": {"vault": {"server": rig.bao.addr(), "path": "secret", "auth": {"kubernetes": {"role": "payments", "audiences": ["vault"]}}}}}}));
    let webhook = start_webhook(
        &rig.standin,
        &[
            "--allowed-vault-servers",
            "http://127.0.0.1:*",
            "--store-check-interval",
            "1s",
            "--lease-duration",
            "3s",
            "--leader-election-namespace",
            "secret-injector",
        ],
    )
    .await;
    let timeout = Duration::from_secs(20);
    wait_for("vault-backend Valid", timeout, || {
        ready(&rig.standin, "secretstores", Some(NS), "vault-backend")
            == Some(("True".into(), "Valid".into()))
    })
    .await;
    wait_for("closed-port Unreachable", timeout, || {
        ready(&rig.standin, "secretstores", Some(NS), "closed-port")
            == Some(("False".into(), "Unreachable".into()))
    })
    .await;
    wait_for("invalid InvalidConfig", timeout, || {
        ready(&rig.standin, "secretstores", Some(NS), "invalid")
            == Some(("False".into(), "InvalidConfig".into()))
    })
    .await;
    wait_for("cluster store Valid", timeout, || {
        ready(&rig.standin, "clustersecretstores", None, "shared")
            == Some(("True".into(), "Valid".into()))
    })
    .await;
    let invalid = rig
        .standin
        .object("secretstores", Some(NS), "invalid")
        .unwrap();
    assert!(invalid["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap()
        .contains("spec.provider.vault.path"));
    let lease = rig
        .standin
        .object("leases", Some("secret-injector"), "secret-injector-leader")
        .expect("a Lease");
    assert!(lease["spec"]["holderIdentity"].as_str().is_some());

    // No churn: with nothing changing, status is not rewritten on every check.
    rig.standin.reset_counts();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        rig.standin.count("patch", "secretstores/status"),
        0,
        "{:?}",
        rig.standin.counts()
    );

    // The backend goes away: the store becomes Unreachable.
    rig.bao.stop().await;
    wait_for("vault-backend Unreachable", timeout, || {
        ready(&rig.standin, "secretstores", Some(NS), "vault-backend")
            == Some(("False".into(), "Unreachable".into()))
    })
    .await;
    drop(webhook);
}

#[tokio::test]
async fn a_new_leader_takes_over_within_the_lease_duration() {
    let standin = StandIn::start().await;
    let args = ["--lease-duration", "3s", "--store-check-interval", "1m"];
    let mut first = start_webhook(&standin, &args).await;
    let holder = || {
        standin
            .object("leases", Some("secret-injector"), "secret-injector-leader")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    };
    wait_for("a leader", Duration::from_secs(10), || holder().is_some()).await;
    let second = start_webhook(&standin, &args).await;
    let leader = holder().unwrap();
    // Both serve admissions; only one holds the lease, and it keeps holding it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(holder().unwrap(), leader);
    // Kill the leader without a chance to release (SIGKILL): the other takes over once the
    // lease has gone unrenewed for its duration.
    first.stop().await;
    let killed_at = Instant::now();
    wait_for("a new leader", Duration::from_secs(10), || {
        holder().is_some_and(|h| h != leader)
    })
    .await;
    let took = killed_at.elapsed();
    // Lease duration (3s) plus one renew period of the observer (1s + jitter) plus slack.
    assert!(took <= Duration::from_secs(6), "takeover took {took:?}");
    drop(second);
}
