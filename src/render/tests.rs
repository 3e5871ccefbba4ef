use super::*;

fn input(text: &str) -> Vec<Input> {
    vec![Input {
        source: "test.yaml".into(),
        text: text.into(),
    }]
}

fn deployment(template_annotations: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: api, namespace: payments}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata:
      annotations:
{template_annotations}
    spec:
      serviceAccountName: api
      containers:
        - name: api
          image: example
{extra_spec}
"#
    )
}

#[test]
fn a_deployment_gets_its_secret_and_patch() {
    let text = deployment(
        "        secret-injector.io/store: vault-backend\n        secret-injector.io/env.DB_PASSWORD: payments/db#password",
        "",
    );
    let report = render(&input(&text), None, &Options::default()).unwrap();
    assert_eq!(report.exit_code(), EXIT_OK);
    let w = &report.workloads[0];
    assert_eq!(w.result, Outcome::Injected, "{w:?}");
    assert_eq!(w.secrets[0].name, "api-injected");
    assert_eq!(w.secrets[0].keys, vec!["DB_PASSWORD"]);
    assert_eq!(w.secrets[0].store_check, StoreCheck::Unchecked);
    assert_eq!(w.secrets[0].refresh_interval, "1h");
    assert_eq!(w.service_account, "api");
    assert!(!w.patch.is_empty());
}

#[test]
fn errors_are_the_parsers_own_text_and_exit_1() {
    let text = deployment(
        "        secret-injector.io/store: vault-backend\n        secret-injector.io/env.DB_PASSWORD: payments/db#password\n        secret-injector.io/refresh-interval: 1s",
        "",
    );
    let report = render(&input(&text), None, &Options::default()).unwrap();
    assert_eq!(report.exit_code(), EXIT_DENIED);
    let w = &report.workloads[0];
    assert_eq!(w.result, Outcome::Denied);
    assert_eq!(
        w.denial.as_deref(),
        Some(
            "annotation secret-injector.io/refresh-interval: \"1s\" is shorter than the minimum \
             refresh interval of 10s set by the operator"
        )
    );
    assert!(report
        .to_text()
        .contains(&format!("  denied: {}\n", w.denial.as_ref().unwrap())));
}

#[test]
fn workload_annotations_merge_under_the_template_and_alone_do_not_trigger() {
    // Workload-level store + template-level env: merged (pod wins on conflict).
    let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  annotations: {secret-injector.io/store: other, secret-injector.io/rollout: none}
spec:
  selector: {}
  template:
    metadata:
      annotations: {secret-injector.io/store: vault-backend, secret-injector.io/env.A: k#p}
    spec: {containers: [{name: c}]}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: only-top
  annotations: {secret-injector.io/store: vault-backend, secret-injector.io/env.A: k#p}
spec:
  selector: {}
  template:
    spec: {containers: [{name: c}]}
"#;
    let report = render(&input(text), None, &Options::default()).unwrap();
    let w = &report.workloads[0];
    assert_eq!(w.namespace, "default");
    assert_eq!(w.secrets[0].store.name, "vault-backend");
    assert_eq!(w.secrets[0].rollout, "none");
    let top = &report.workloads[1];
    assert_eq!(top.result, Outcome::NotInjected);
    assert!(
        top.reason.as_ref().unwrap().contains("pod template"),
        "{top:?}"
    );
    assert_eq!(report.exit_code(), EXIT_OK);
}

#[test]
fn store_references_are_checked_namespace_aware() {
    let text = deployment(
        "        secret-injector.io/store: vault-backend\n        secret-injector.io/env.DB_PASSWORD: payments/db#password",
        "",
    );
    let stores = input(
        r#"
apiVersion: secret-injector.io/v1alpha1
kind: SecretStore
metadata: {name: vault-backend, namespace: elsewhere}
spec: {provider: {aws: {service: SecretsManager, region: eu-west-1}}}
"#,
    );
    let report = render(&input(&text), Some(&stores), &Options::default()).unwrap();
    assert_eq!(
        report.workloads[0].denial.as_deref(),
        Some("SecretStore vault-backend not found in namespace payments")
    );
    assert_eq!(report.stores.as_ref().unwrap().len(), 1);
    assert_eq!(report.exit_code(), EXIT_DENIED);
}

#[test]
fn invalid_stores_are_reported_as_the_validating_webhook_would() {
    let stores = input(
        r#"
apiVersion: secret-injector.io/v1alpha1
kind: SecretStore
metadata: {name: bad, namespace: payments}
spec: {provider: {aws: {service: SecretsManager, region: nowhere}}}
"#,
    );
    let report = render(&input(""), Some(&stores), &Options::default()).unwrap();
    let s = &report.stores.as_ref().unwrap()[0];
    let denial = s.denial.as_deref().unwrap();
    assert!(
        denial.starts_with("SecretStore payments/bad is invalid: spec.provider.aws.region"),
        "{denial}"
    );
    assert_eq!(report.summary.invalid_stores, 1);
    assert_eq!(report.exit_code(), EXIT_DENIED);
}

#[test]
fn unreadable_input_names_the_position_and_never_the_content() {
    let err = render(
        &input("apiVersion: v1\nkind: Secret\ndata:\n  password: [hunter2-value\n"),
        None,
        &Options::default(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("test.yaml: not valid YAML"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    // A workload whose fields do not match its schema: the path, not the value.
    let err = render(
        &input("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: hunter2-value}\n"),
        None,
        &Options::default(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("spec.replicas"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// There are no values offline; Secret objects in the input (data, stringData) and env values
/// in containers never reach either output form.
#[test]
fn no_value_from_the_input_reaches_the_output() {
    let text = format!(
        "{}---\n{}",
        deployment(
            "        secret-injector.io/store: vault-backend\n        secret-injector.io/extract: payments/all",
            "          env:\n            - {name: DB_PASSWORD, value: s3cr3t-env-value}",
        ),
        r#"apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: payments}
data: {password: czNjcjN0LWRhdGEtdmFsdWU=}
stringData: {token: s3cr3t-string-value}
"#
    );
    let report = render(&input(&text), None, &Options::default()).unwrap();
    assert_eq!(report.workloads[0].result, Outcome::Injected);
    assert_eq!(report.skipped[0].kind, "Secret");
    for out in [report.to_text(), report.to_json()] {
        for needle in [
            "s3cr3t",
            "czNjcjN0LWRhdGEtdmFsdWU",
            "password:",
            "\"password\"",
        ] {
            assert!(!out.contains(needle), "{needle} in:\n{out}");
        }
    }
}

#[test]
fn lists_and_bare_pods() {
    let text = r#"
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata:
      generateName: worker-
      annotations: {secret-injector.io/store: s, secret-injector.io/env.A: k}
    spec: {containers: [{name: c}]}
"#;
    let report = render(&input(text), None, &Options::default()).unwrap();
    let w = &report.workloads[0];
    assert_eq!(w.name, "worker-*");
    // A bare pod with only generateName has no name to derive the Secret's from: same denial
    // as admission.
    assert_eq!(w.result, Outcome::Denied);
    assert!(w
        .denial
        .as_ref()
        .unwrap()
        .starts_with("annotation secret-injector.io/secret-name: missing"));
}

#[test]
fn manifests_are_read_as_kubectl_reads_them() {
    // YAML 1.1 octal, as in deploy/deployment.yaml's `defaultMode: 0440`.
    let text = deployment(
        "        secret-injector.io/store: s\n        secret-injector.io/file.ca.crt: k#p",
        "      volumes: [{name: v, secret: {secretName: x, defaultMode: 0440}}]",
    );
    let report = render(&input(&text), None, &Options::default()).unwrap();
    assert_eq!(report.workloads[0].result, Outcome::Injected);
}
