//! The cold-path rig: the stand-in and a real OpenBao (the payments rig: Kubernetes auth that
//! reviews tokens against the stand-in), a role any ServiceAccount may log in with, and the
//! counting proxy every bench store points at. Seeding helpers for namespaces, workloads and
//! managed Secrets built by the webhook's own code.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_standin::StandIn;
use secret_injector::k8s::{Owner, OwnerKind, WorkloadKind};
use secret_injector::managed::{self, DigestKey, Recorded, Target};
use secret_injector::redact::SecretBytes;
use secret_injector::spec::{self, ParseContext};
use serde_json::{json, Value};
use test_rig::payments::{pod_review, Rig};

use crate::common::RIG_HMAC_KEY;
use crate::proxy::Proxy;

pub const STORE: &str = "vault-bench";
pub const USERNAME: &str = "bench-user";
pub const PASSWORD: &str = "bench-password";

pub struct Backends {
    pub rig: Rig,
    pub proxy: Proxy,
}

impl Backends {
    pub async fn start() -> Backends {
        let rig = Rig::start().await;
        rig.bao
            .kv_put(
                "secret",
                2,
                "bench/db",
                json!({"username": USERNAME, "password": PASSWORD}),
            )
            .await;
        rig.bao
            .write_policy(
                "bench-read",
                r#"path "secret/data/bench/*" { capabilities = ["read"] }"#,
            )
            .await;
        rig.bao
            .kubernetes_role(
                "kubernetes",
                "bench",
                &["*"],
                &["*"],
                &["bench-read"],
                Some("vault"),
            )
            .await;
        let proxy = Proxy::start(&rig.bao.addr()).await;
        Backends { rig, proxy }
    }

    pub fn standin(&self) -> &StandIn {
        &self.rig.standin
    }

    /// An opted-in namespace with the bench store (through the proxy).
    pub fn seed_namespace(&self, ns: &str) {
        let s = self.standin();
        s.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
            "labels": {"secret-injector.io/inject": "enabled", "kubernetes.io/metadata.name": ns}}}));
        s.seed(json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": STORE, "namespace": ns},
            "spec": {"provider": {"vault": {"server": self.proxy.url, "path": "secret", "version": "v2",
                "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "bench", "audiences": ["vault"]}}}}}}));
    }

    pub fn seed_service_account(&self, ns: &str, sa: &str) {
        self.standin().seed(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}}));
    }

    /// A Deployment and its ReplicaSet (`<name>-5d4f8`).
    pub fn seed_workload(&self, ns: &str, name: &str) -> Workload {
        let s = self.standin();
        let d = s.seed(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "bench:1"}]}}}}));
        let deployment_uid = d["metadata"]["uid"].as_str().unwrap().to_string();
        let replicaset = format!("{name}-5d4f8");
        let rs = s.seed(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": replicaset, "namespace": ns,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": deployment_uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"selector": {"matchLabels": {"app": name}}}}));
        Workload {
            namespace: ns.into(),
            name: name.into(),
            deployment_uid,
            replicaset,
            replicaset_uid: rs["metadata"]["uid"].as_str().unwrap().to_string(),
        }
    }
}

pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub deployment_uid: String,
    pub replicaset: String,
    pub replicaset_uid: String,
}

pub fn annotations(interval: Option<&str>) -> Value {
    let mut a = json!({
        "secret-injector.io/store": STORE,
        "secret-injector.io/env.DB_USERNAME": "bench/db#username",
        "secret-injector.io/env.DB_PASSWORD": "bench/db#password"
    });
    if let Some(i) = interval {
        a["secret-injector.io/refresh-interval"] = json!(i);
    }
    a
}

/// A pod of `w` running as `sa`, as the ReplicaSet controller would create it.
pub fn review(w: &Workload, sa: &str, uid: &str) -> Value {
    let mut r = pod_review(
        uid,
        Some((&w.replicaset, &w.replicaset_uid)),
        sa,
        annotations(None),
    );
    r["request"]["namespace"] = json!(w.namespace);
    r["request"]["object"]["metadata"]["namespace"] = json!(w.namespace);
    r["request"]["object"]["metadata"]["labels"] = json!({"app": w.name});
    r
}

/// The managed Secret the webhook would write for `w` running as `sa`, with the values in
/// OpenBao and the rig's HMAC key, so the refresher finds it current.
pub fn managed_secret(w: &Workload, sa: &str, interval: &str, key: &DigestKey) -> Value {
    let ann: BTreeMap<String, String> =
        serde_json::from_value(annotations(Some(interval))).unwrap();
    let names = vec!["app".to_string()];
    let spec = spec::parse(
        &ann,
        &ParseContext {
            workload_name: Some(&w.name),
            container_names: &names,
            min_refresh_interval: Duration::from_secs(1),
        },
    )
    .unwrap()
    .unwrap();
    let item = &spec.items[0];
    let target = Target {
        namespace: w.namespace.clone(),
        name: item.secret_name.clone(),
        record: Recorded {
            source: item.source(),
            service_account: sa.into(),
            refresh_interval: item.refresh_interval,
            owner: Owner {
                namespace: w.namespace.clone(),
                kind: OwnerKind::Known(WorkloadKind::Deployment),
                name: w.name.clone(),
                uid: Some(w.deployment_uid.clone()),
            },
            rollout: item.rollout,
            lease: None,
        },
    };
    let data = [("DB_USERNAME", USERNAME), ("DB_PASSWORD", PASSWORD)]
        .iter()
        .map(|(k, v)| (k.to_string(), SecretBytes::new(v.as_bytes().to_vec())))
        .collect();
    let secret: Secret = managed::build(&target, &data, key, k8s_openapi::jiff::Timestamp::now());
    serde_json::to_value(&secret).unwrap()
}

pub fn rig_digest_key() -> DigestKey {
    DigestKey::new(SecretBytes::new(RIG_HMAC_KEY.to_vec()))
}

/// The stage histogram's per-stage count, mean and bucket-bound p50/p99, from /metrics text.
pub fn stage_summary(metrics: &str) -> Vec<(String, u64, f64, String, String)> {
    let series = "secret_injector_admission_stage_seconds";
    let mut out = Vec::new();
    for stage in ["resolve", "login", "read", "write"] {
        let label = format!("stage=\"{stage}\"");
        let count = crate::common::metric(metrics, &format!("{series}_count"), &[&label]) as u64;
        let sum = crate::common::metric(metrics, &format!("{series}_sum"), &[&label]);
        let mut buckets: Vec<(f64, f64)> = metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{series}_bucket{{")) && l.contains(&label))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, l.rsplit(' ').next()?.parse().ok()?))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let q = |p: f64| {
            let want = (count as f64 * p).ceil();
            buckets
                .iter()
                .find(|(_, c)| *c >= want && want > 0.0)
                .map(|(le, _)| {
                    if le.is_finite() {
                        format!("≤ {:.1} ms", le * 1000.0)
                    } else {
                        "> 10 s".into()
                    }
                })
                .unwrap_or_else(|| "—".into())
        };
        let mean = if count > 0 {
            sum / count as f64 * 1000.0
        } else {
            0.0
        };
        out.push((stage.to_string(), count, mean, q(0.5), q(0.99)));
    }
    out
}
