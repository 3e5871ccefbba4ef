//! The payments scenario, shared by end-to-end tests and the demo: a stand-in API server
//! seeded with a labelled namespace, ServiceAccounts, a SecretStore and a Deployment, and a
//! real OpenBao with Kubernetes auth that reviews tokens against the stand-in.

use serde_json::{json, Value};

use crate::openbao::OpenBao;
use k8s_standin::StandIn;

pub const NS: &str = "payments";
pub const SA: &str = "payments-api";
pub const DEPLOYMENT: &str = "payments-api";
pub const REPLICASET: &str = "payments-api-7c9f8d6b5";
/// Values the tests look for everywhere they must not appear.
pub const DB_USERNAME: &str = "pay_user_SENTINEL_u7Qx";
pub const DB_PASSWORD: &str = "pw_SENTINEL_9f3Kq!zT";
pub const FEED_KEY: &str = "feed_SENTINEL_key_41aa";

pub struct Rig {
    pub standin: StandIn,
    pub bao: OpenBao,
}

impl Rig {
    pub async fn start() -> Rig {
        let standin = StandIn::start().await;
        let bao = OpenBao::start().await;

        // Vault side: KV v2 (the dev server's `secret/`), KV v1 at `kv1/`, a read policy and
        // a Kubernetes auth role bound to payments/payments-api with audience "vault".
        bao.enable_kv("secret", 2).await;
        bao.enable_kv("kv1", 1).await;
        bao.kv_put(
            "secret",
            2,
            "payments/db",
            json!({"username": DB_USERNAME, "password": DB_PASSWORD}),
        )
        .await;
        bao.kv_put(
            "secret",
            2,
            "payments/fraud-feed",
            json!({"api_key": FEED_KEY, "endpoint": "https://feed.example"}),
        )
        .await;
        bao.kv_put(
            "kv1",
            1,
            "payments/legacy",
            json!({"token": "legacy_SENTINEL_tok"}),
        )
        .await;
        bao.write_policy(
            "payments-read",
            r#"path "secret/data/payments/*" { capabilities = ["read"] }
path "kv1/payments/*" { capabilities = ["read"] }"#,
        )
        .await;
        standin.seed(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}),
        );
        standin.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "vault-reviewer", "namespace": "kube-system"}}));
        let reviewer = standin.issue_token("kube-system", "vault-reviewer", &[], 48 * 3600);
        bao.enable_kubernetes_auth("kubernetes", &standin.url(), &reviewer)
            .await;
        bao.kubernetes_role(
            "kubernetes",
            "payments",
            &[SA],
            &[NS],
            &["payments-read"],
            Some("vault"),
        )
        .await;

        // Kubernetes side.
        standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"secret-injector.io/inject": "enabled", "kubernetes.io/metadata.name": NS}}}));
        for sa in [SA, "intruder", "default"] {
            standin.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": NS}}));
        }
        let rig = Rig { standin, bao };
        rig.seed_store("vault-backend", json!({}));
        rig.seed_deployment(DEPLOYMENT, REPLICASET);
        rig
    }

    /// A SecretStore pointing at the running OpenBao; `overrides` is merged into
    /// `spec.provider.vault`.
    pub fn seed_store(&self, name: &str, overrides: Value) {
        let mut vault = json!({
            "server": self.bao.addr(),
            "path": "secret",
            "version": "v2",
            "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "payments", "audiences": ["vault"]}}
        });
        merge(&mut vault, overrides);
        self.standin.seed(json!({
            "apiVersion": "secret-injector.io/v1alpha1",
            "kind": "SecretStore",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"provider": {"vault": vault}}
        }));
    }

    /// A Deployment and its ReplicaSet; returns the Deployment's uid.
    pub fn seed_deployment(&self, name: &str, replicaset: &str) -> String {
        let deployment = self.standin.seed(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "payments:1"}]}}}
        }));
        let uid = deployment["metadata"]["uid"].as_str().unwrap().to_string();
        self.standin.seed(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": replicaset, "namespace": NS,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"selector": {"matchLabels": {"app": name}}}
        }));
        uid
    }

    pub fn replicaset_uid(&self, name: &str) -> String {
        self.standin.object("replicasets", Some(NS), name).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// AWS side of the payments story (moto): the region every AWS store and seeded secret uses,
/// the IAM role the payments ServiceAccount is annotated with, and the fraud-feed values.
pub const AWS_REGION: &str = "eu-west-1";
pub const AWS_FEED_KEY: &str = "aws_feed_SENTINEL_key_7d2e";
pub const AWS_FEED_ENDPOINT: &str = "https://fraud-feed.example/v2";
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

impl Rig {
    /// A SecretStore for AWS Secrets Manager in [`AWS_REGION`] at `endpoint` (a moto URL);
    /// `role` sets `spec.provider.aws.role`.
    pub fn seed_aws_store(&self, name: &str, endpoint: &str, role: Option<&str>) {
        let mut aws =
            json!({"service": "SecretsManager", "region": AWS_REGION, "endpoint": endpoint});
        if let Some(role) = role {
            aws["role"] = json!(role);
        }
        self.standin.seed(json!({
            "apiVersion": "secret-injector.io/v1alpha1",
            "kind": "SecretStore",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"provider": {"aws": aws}}
        }));
    }

    /// (Re)create ServiceAccount `name` in [`NS`], with the IRSA role annotation when given.
    pub fn seed_service_account(&self, name: &str, role_arn: Option<&str>) {
        let mut sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NS}});
        if let Some(role) = role_arn {
            sa["metadata"]["annotations"] = json!({ ROLE_ANNOTATION: role });
        }
        self.standin.seed(sa);
    }
}

/// Recursive JSON merge (objects merge, everything else replaces).
pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// An AdmissionReview for a pod CREATE as the ReplicaSet controller sends it.
pub fn pod_review(
    uid: &str,
    replicaset: Option<(&str, &str)>,
    service_account: &str,
    annotations: Value,
) -> Value {
    let mut metadata = json!({"generateName": "payments-api-7c9f8d6b5-", "namespace": NS, "annotations": annotations, "labels": {"app": "payments-api"}});
    if let Some((name, rs_uid)) = replicaset {
        metadata["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": rs_uid, "controller": true, "blockOwnerDeletion": true}]);
        metadata["generateName"] = json!(format!("{name}-"));
    } else {
        metadata["name"] = json!("lonely-pod");
        metadata.as_object_mut().unwrap().remove("generateName");
    }
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NS,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": metadata,
                "spec": {
                    "serviceAccountName": service_account,
                    "containers": [{"name": "app", "image": "payments:1", "env": [{"name": "LOG_LEVEL", "value": "info"}]}]
                }
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// The JSONPatch carried by a response, decoded.
pub fn decoded_patch(response: &Value) -> Option<Value> {
    use base64::Engine;
    let b64 = response.get("patch")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// Apply a response's patch to the review's pod, as the API server would.
pub fn apply_patch(review: &mut Value, response: &Value) {
    let patch: json_patch::Patch =
        serde_json::from_value(decoded_patch(response).expect("a patch")).unwrap();
    json_patch::patch(&mut review["request"]["object"], &patch).unwrap();
}

/// Secret data of a stored Secret, decoded.
pub fn secret_data(secret: &Value) -> std::collections::BTreeMap<String, String> {
    use base64::Engine;
    secret["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            (k.clone(), String::from_utf8(bytes).unwrap())
        })
        .collect()
}

/// Assert none of `sentinels` appears in `text`, raw, base64-encoded or JSON-escaped.
pub fn assert_no_leak(what: &str, text: &str, sentinels: &[&str]) {
    use base64::Engine;
    for s in sentinels {
        let forms = [
            s.to_string(),
            base64::engine::general_purpose::STANDARD.encode(s),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s),
            serde_json::to_string(s)
                .unwrap()
                .trim_matches('"')
                .to_string(),
        ];
        for f in forms {
            assert!(!text.contains(&f), "{what} leaks a secret value ({f:?})");
        }
    }
}

/// Poll `check` every 100 ms until it holds; fail the test after `timeout`.
pub async fn wait_for(what: &str, timeout: std::time::Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
