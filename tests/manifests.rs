//! The committed manifests: CRDs match the Rust types, the webhook configuration keeps its
//! safety settings, RBAC stays least-privilege.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn documents(path: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = secret_injector::store::crd::crds_yaml().unwrap();
    let committed = read("deploy/base/crds/secret-injector.io_crds.yaml");
    assert!(
        generated == committed,
        "deploy/base/crds/secret-injector.io_crds.yaml is stale: run `make crds` and commit it"
    );

    let crds: Vec<CustomResourceDefinition> =
        documents("deploy/base/crds/secret-injector.io_crds.yaml")
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect();
    let names: BTreeSet<_> = crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "secretstores.secret-injector.io".to_string(),
            "clustersecretstores.secret-injector.io".to_string()
        ])
    );
    for crd in &crds {
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "status subresource"
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            columns.contains(&"Status") && columns.contains(&"Ready"),
            "{columns:?}"
        );
    }
    assert_eq!(
        crds.iter()
            .find(|c| c.spec.names.kind == "ClusterSecretStore")
            .unwrap()
            .spec
            .scope,
        "Cluster"
    );
}

#[test]
fn mutating_webhook_keeps_its_safety_settings() {
    let config: MutatingWebhookConfiguration =
        serde_json::from_value(documents("deploy/base/mutating-webhook.yaml").remove(0)).unwrap();
    let hooks = config.webhooks.unwrap();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hook.side_effects, "NoneOnDryRun");
    assert_eq!(hook.timeout_seconds, Some(10));
    assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert_eq!(hook.admission_review_versions, vec!["v1".to_string()]);
    let rules = hook.rules.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].operations.as_deref(),
        Some(&["CREATE".to_string()][..]),
        "Pod CREATE only, never UPDATE"
    );
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods".to_string()][..])
    );
    assert_eq!(
        hook.client_config.service.as_ref().unwrap().path.as_deref(),
        Some("/mutate")
    );
    let selector = serde_json::to_string(&hook.namespace_selector).unwrap();
    for needle in [
        "secret-injector.io/inject",
        "enabled",
        "kube-system",
        "secret-injector\"",
    ] {
        assert!(
            selector.contains(needle),
            "namespaceSelector lacks {needle}: {selector}"
        );
    }
    assert!(
        hook.object_selector.is_none(),
        "no objectSelector a tenant could use to skip injection"
    );
}

#[test]
fn rbac_is_least_privilege() {
    let docs = documents("deploy/base/rbac.yaml");
    let mut granted = BTreeSet::new();
    for doc in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        let rules: Vec<PolicyRule> = serde_json::from_value(doc["rules"].clone()).unwrap();
        for rule in rules {
            for group in rule.api_groups.unwrap_or_default() {
                for resource in rule.resources.clone().unwrap_or_default() {
                    for verb in &rule.verbs {
                        assert!(
                            group != "*" && resource != "*" && verb != "*",
                            "wildcard in {doc}"
                        );
                        granted.insert(format!("{group}/{resource}:{verb}"));
                    }
                }
            }
        }
    }
    // A snapshot: a new verb or resource must be a deliberate change to this list.
    let expected: BTreeSet<String> = [
        "/serviceaccounts/token:create",
        "/serviceaccounts:get",
        "/secrets:get",
        "/secrets:create",
        "/secrets:update",
        "/secrets:delete",
        "/secrets:list",
        "/secrets:watch",
        "/pods:get",
        "/pods:list",
        "/pods:watch",
        "apps/replicasets:get",
        "apps/deployments:get",
        "apps/deployments:list",
        "apps/deployments:watch",
        "apps/deployments:patch",
        "apps/statefulsets:get",
        "apps/statefulsets:list",
        "apps/statefulsets:watch",
        "apps/statefulsets:patch",
        "apps/daemonsets:get",
        "apps/daemonsets:list",
        "apps/daemonsets:watch",
        "apps/daemonsets:patch",
        "batch/jobs:get",
        "batch/cronjobs:get",
        "/namespaces:get",
        "/namespaces:list",
        "/namespaces:watch",
        "secret-injector.io/secretstores:get",
        "secret-injector.io/secretstores:list",
        "secret-injector.io/secretstores:watch",
        "secret-injector.io/clustersecretstores:get",
        "secret-injector.io/clustersecretstores:list",
        "secret-injector.io/clustersecretstores:watch",
        "secret-injector.io/secretstores/status:patch",
        "secret-injector.io/clustersecretstores/status:patch",
        "coordination.k8s.io/leases:create",
        "coordination.k8s.io/leases:get",
        "coordination.k8s.io/leases:update",
        "/events:create",
        "/events:patch",
        "events.k8s.io/events:create",
        "events.k8s.io/events:patch",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(granted, expected);
}

#[test]
fn deployment_is_highly_available() {
    let deployment = documents("deploy/base/deployment.yaml").remove(0);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pdb = documents("deploy/base/pdb.yaml").remove(0);
    assert_eq!(pdb["kind"], "PodDisruptionBudget");
    let kustomization = read("deploy/base/kustomization.yaml");
    for file in [
        "crds/secret-injector.io_crds.yaml",
        "rbac.yaml",
        "deployment.yaml",
        "service.yaml",
        "pdb.yaml",
        "mutating-webhook.yaml",
        "validating-webhook.yaml",
    ] {
        assert!(
            kustomization.contains(file),
            "kustomization.yaml misses {file}"
        );
    }
}

#[test]
fn certs_command_writes_a_usable_pair_and_fills_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    // `--webhook-config` still fills caBundle lines in place, for configurations kept outside
    // deploy/ (deploy/ itself takes the CA from the generated Secret, see certs/self-signed/).
    let config = dir.path().join("mutating.yaml");
    let with_bundle = read("deploy/base/mutating-webhook.yaml").replace(
        "        port: 443\n",
        "        port: 443\n      caBundle: \"\"\n",
    );
    std::fs::write(&config, with_bundle).unwrap();
    let out = dir.path().join("generated");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_secret-injector"))
        .args([
            "certs",
            "--namespace",
            "secret-injector",
            "--service",
            "secret-injector",
        ])
        .arg("--out-dir")
        .arg(&out)
        .arg("--webhook-config")
        .arg(&config)
        .status()
        .unwrap();
    assert!(status.success());
    let ca = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    let cert = std::fs::read_to_string(out.join("tls.crt")).unwrap();
    assert!(ca.contains("BEGIN CERTIFICATE") && cert.contains("BEGIN CERTIFICATE"));
    assert!(std::fs::read_to_string(out.join("tls.key"))
        .unwrap()
        .contains("PRIVATE KEY"));
    assert!(std::fs::read(out.join("hmac.key")).unwrap().len() >= 32);
    let hook: MutatingWebhookConfiguration = serde_json::from_value(
        serde_saphyr::from_str::<Value>(&std::fs::read_to_string(&config).unwrap()).unwrap(),
    )
    .unwrap();
    let bundle = hook.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap();
    assert_eq!(
        bundle.0,
        ca.as_bytes(),
        "caBundle is the CA that signed the serving certificate"
    );
    // The serving certificate names the Service's DNS names.
    let der = rustls_pemfile::certs(&mut cert.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(der.as_ref()).to_string();
    assert!(
        text.contains("secret-injector.secret-injector.svc"),
        "DNS SAN missing"
    );
}

#[test]
fn validating_webhook_cannot_be_skipped_by_tenants() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let config: ValidatingWebhookConfiguration =
        serde_json::from_value(documents("deploy/base/validating-webhook.yaml").remove(0)).unwrap();
    let hook = &config.webhooks.unwrap()[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hook.side_effects, "None");
    assert!(
        hook.object_selector.is_none() && hook.namespace_selector.is_none(),
        "no selector a tenant could use to skip it"
    );
    let rule = &hook.rules.as_ref().unwrap()[0];
    assert_eq!(
        rule.api_groups.as_deref(),
        Some(&["secret-injector.io".to_string()][..])
    );
    let resources = rule.resources.clone().unwrap();
    assert!(
        resources.contains(&"secretstores".to_string())
            && resources.contains(&"clustersecretstores".to_string())
    );
    let ops = rule.operations.clone().unwrap();
    assert!(ops.contains(&"CREATE".to_string()) && ops.contains(&"UPDATE".to_string()));
    assert_eq!(
        hook.client_config.service.as_ref().unwrap().path.as_deref(),
        Some("/validate")
    );
}
