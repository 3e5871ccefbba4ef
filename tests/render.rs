//! `secret-injector render`: golden output for the examples, and for broken manifests the very
//! denial `/mutate` answers for the same pod (the Router in-process, against the API stand-in).
//! Set `UPDATE_GOLDEN=1` to rewrite the golden files after an intended change.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use k8s_standin::StandIn;
use secret_injector::context::{Context, ContextConfig};
use secret_injector::managed::DigestKey;
use secret_injector::metrics::Metrics;
use secret_injector::render::{self, Input, Options, Outcome};
use secret_injector::store::EndpointPolicy;
use serde_json::{json, Value};
use tower::ServiceExt;

const BIN: &str = env!("CARGO_BIN_EXE_secret-injector");
const GOLDEN: &str = "tests/fixtures/render";
const VAULT: &str = "https://vault.vault.svc:8200";

fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(BIN);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("render")
        .args(args)
        // No cluster: a kubeconfig that exists nowhere, so any attempt would fail loudly.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("SECRET_INJECTOR_ALLOWED_VAULT_SERVERS")
        .env_remove("SECRET_INJECTOR_MIN_REFRESH_INTERVAL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("the binary runs");
    {
        let mut pipe = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(GOLDEN)
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn the_deploy_example_renders_as_the_golden_files() {
    let (code, text, err) = run(&["-f", "deploy/examples/deployment.yaml"], None);
    assert_eq!(code, 0, "{err}");
    golden("deployment.txt", &text);
    let (code, json, err) = run(
        &["-f", "deploy/examples/deployment.yaml", "-o", "json"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    golden("deployment.json", &json);
    let report: Value = serde_json::from_str(&json).unwrap();
    let w = &report["workloads"][0];
    assert_eq!(w["result"], "injected");
    assert_eq!(w["secrets"][0]["name"], "payments-api-injected");
    assert_eq!(
        w["secrets"][0]["keys"],
        json!(["DB_PASSWORD", "DB_USERNAME"])
    );

    // The whole example directory (kustomization, namespace, store, ServiceAccount): the
    // store is checked when given with --stores, and stdin works the same as a file.
    let (code, text, err) = run(
        &[
            "-f",
            "deploy/examples/",
            "--stores",
            "deploy/examples/secretstore.yaml",
            "--allowed-vault-servers",
            VAULT,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}\n{text}");
    assert!(
        text.contains("SecretStore vault-backend (found, valid)"),
        "{text}"
    );
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/deployment.yaml"),
    )
    .unwrap();
    let (code, from_stdin, _) = run(&["-f", "-"], Some(&example));
    assert_eq!(code, 0);
    assert_eq!(
        from_stdin,
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(GOLDEN)
                .join("deployment.txt")
        )
        .unwrap()
        .replace("deploy/examples/deployment.yaml", "-")
    );
}

#[test]
fn every_workload_kind_renders_as_the_golden_files() {
    let args = [
        "-f",
        "tests/fixtures/render/workloads.yaml",
        "--stores",
        "tests/fixtures/render/stores.yaml",
        "--allowed-vault-servers",
        VAULT,
    ];
    let (code, text, err) = run(&args, None);
    assert_eq!(code, 0, "{err}\n{text}");
    golden("workloads.txt", &text);
    let (code, json, err) = run(&[&args[..], &["-o", "json"]].concat(), None);
    assert_eq!(code, 0, "{err}");
    golden("workloads.json", &json);
    let report: Value = serde_json::from_str(&json).unwrap();
    let results: Vec<(&str, &str)> = report["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["kind"].as_str().unwrap(), w["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        results,
        [
            ("StatefulSet", "injected"),
            ("CronJob", "injected"),
            ("Pod", "injected"),
            ("Deployment", "injected"),
            ("DaemonSet", "not-injected"),
        ]
    );
}

#[test]
fn unreadable_input_exits_2() {
    let (code, _, err) = run(&["-f", "tests/fixtures/render/does-not-exist.yaml"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does-not-exist.yaml: cannot be read"), "{err}");
    let (code, _, err) = run(&["-f", "-"], Some("kind: [unclosed\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("-: not valid YAML"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Broken manifests: render's message == /mutate's denial
// ---------------------------------------------------------------------------------------

/// A broken Deployment: its own annotations, its template's, and extra container fields.
struct Broken {
    what: &'static str,
    workload: Value,
    template: Value,
    container: Value,
}

fn broken_cases() -> Vec<Broken> {
    let ok = json!({"secret-injector.io/store": "vault-backend", "secret-injector.io/env.DB_PASSWORD": "payments/db#password"});
    let with = |extra: Value| {
        let mut m = ok.clone();
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        m
    };
    vec![
        Broken {
            what: "unknown annotation",
            workload: json!({}),
            template: with(json!({"secret-injector.io/envv.X": "a"})),
            container: json!({}),
        },
        Broken {
            what: "no store",
            workload: json!({}),
            template: json!({"secret-injector.io/env.A": "payments/db#a"}),
            container: json!({}),
        },
        Broken {
            what: "interval below the operator's minimum",
            workload: json!({}),
            template: with(json!({"secret-injector.io/refresh-interval": "2s"})),
            container: json!({}),
        },
        Broken {
            what: "bad setting on the workload itself, merged under the template",
            workload: json!({"secret-injector.io/rollout": "sometimes"}),
            template: ok.clone(),
            container: json!({}),
        },
        Broken {
            what: "remote key escaping the store's path",
            workload: json!({}),
            template: json!({"secret-injector.io/store": "vault-backend", "secret-injector.io/env.A": "../other/db#a"}),
            container: json!({}),
        },
        Broken {
            what: "container that is not in the pod",
            workload: json!({}),
            template: with(json!({"secret-injector.io/containers": "sidecar"})),
            container: json!({}),
        },
        Broken {
            what: "full and short form mixed",
            workload: json!({}),
            template: with(
                json!({"secret-injector.io/external-secrets": "- name: x\n  storeRef: {name: vault-backend}\n  data: [{secretKey: A, remoteRef: {key: k}}]\n"}),
            ),
            container: json!({}),
        },
        Broken {
            what: "two items producing the same env var",
            workload: json!({}),
            template: json!({"secret-injector.io/external-secrets": "- name: one\n  storeRef: {name: vault-backend}\n  data: [{secretKey: A, remoteRef: {key: k1}}]\n  inject: {env: true}\n- name: two\n  storeRef: {name: vault-backend}\n  data: [{secretKey: A, remoteRef: {key: k2}}]\n  inject: {env: true}\n"}),
            container: json!({}),
        },
        Broken {
            what: "mount path already used by the container (patch planner)",
            workload: json!({}),
            template: json!({"secret-injector.io/store": "vault-backend", "secret-injector.io/file.ca.crt": "payments/ca#crt"}),
            container: json!({"volumeMounts": [{"name": "data", "mountPath": "/var/run/secret-injector"}]}),
        },
        Broken {
            what: "store that does not exist in the namespace",
            workload: json!({}),
            template: json!({"secret-injector.io/store": "missing-store", "secret-injector.io/env.A": "payments/db#a"}),
            container: json!({}),
        },
        Broken {
            what: "ClusterSecretStore whose conditions exclude the namespace",
            workload: json!({}),
            template: json!({"secret-injector.io/store": "ClusterSecretStore/risk-only", "secret-injector.io/env.A": "payments/db#a"}),
            container: json!({}),
        },
        Broken {
            what: "store naming a server outside the allowlist",
            workload: json!({}),
            template: json!({"secret-injector.io/store": "rogue", "secret-injector.io/env.A": "payments/db#a"}),
            container: json!({}),
        },
    ]
}

/// The stores both sides see: the stand-in serves them to `/mutate`, render reads them.
fn stores() -> Vec<Value> {
    let vault = |server: &str| json!({"vault": {"server": server, "path": "secret", "auth": {"kubernetes": {"role": "payments", "audiences": ["vault"]}}}});
    vec![
        json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": "vault-backend", "namespace": "payments"}, "spec": {"provider": vault(VAULT)}}),
        json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": "rogue", "namespace": "payments"}, "spec": {"provider": vault("https://vault.attacker.example:8200")}}),
        json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "ClusterSecretStore",
            "metadata": {"name": "risk-only"}, "spec": {"provider": vault(VAULT), "conditions": [{"namespaces": ["risk"]}]}}),
    ]
}

fn deployment(case: &Broken, name: &str) -> Value {
    let mut container = json!({"name": "api", "image": "example"});
    container
        .as_object_mut()
        .unwrap()
        .extend(case.container.as_object().unwrap().clone());
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "payments", "annotations": case.workload},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": case.template},
                "spec": {"serviceAccountName": "payments-api", "containers": [container]}
            }
        }
    })
}

/// What `/mutate` answers (dry run) for the pod the Deployment's ReplicaSet would create.
async fn mutate(standin: &StandIn, router: &axum::Router, deployment: &Value) -> Value {
    let name = deployment["metadata"]["name"].as_str().unwrap();
    let d = standin.seed(deployment.clone());
    let rs_name = format!("{name}-5d8f7c9b6");
    let rs = standin.seed(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": rs_name, "namespace": "payments",
            // The Deployment controller copies the Deployment's annotations onto its ReplicaSet.
            "annotations": deployment["metadata"]["annotations"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": d["metadata"]["uid"], "controller": true}]},
        "spec": {"selector": {}}}));
    let template = &deployment["spec"]["template"];
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": format!("{rs_name}-"), "namespace": "payments",
            "labels": template["metadata"]["labels"], "annotations": template["metadata"]["annotations"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name, "uid": rs["metadata"]["uid"], "controller": true}]},
        "spec": template["spec"]});
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": format!("render-{name}"), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "payments", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "dryRun": true}});
    let response = router
        .clone()
        .oneshot(
            Request::post("/mutate")
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&review).unwrap()))
                .unwrap(),
        )
        .await
        .unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    body["response"].clone()
}

/// The denial `/mutate` answers for the Deployment's pod.
async fn mutate_denial(standin: &StandIn, router: &axum::Router, deployment: &Value) -> String {
    let response = mutate(standin, router, deployment).await;
    let name = &deployment["metadata"]["name"];
    assert_eq!(response["allowed"], false, "{name}: {response}");
    response["status"]["message"].as_str().unwrap().to_string()
}

async fn standin_with_stores() -> StandIn {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let standin = StandIn::start().await;
    standin.seed(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "payments", "labels": {"secret-injector.io/inject": "enabled"}}}));
    standin.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "payments-api", "namespace": "payments"}}));
    for s in stores() {
        standin.seed(s);
    }
    standin
}

fn router(standin: &StandIn, endpoints: &EndpointPolicy) -> axum::Router {
    secret_injector::server::router(Arc::new(Context::new(
        standin.client(),
        ContextConfig {
            endpoints: endpoints.clone(),
            ..ContextConfig::default()
        },
        Metrics::new(),
        DigestKey::random(),
    )))
}

#[tokio::test]
async fn the_example_patch_is_the_one_mutate_answers() {
    let standin = standin_with_stores().await;
    let endpoints = EndpointPolicy::with_vault(&[VAULT]);
    let router = router(&standin, &endpoints);
    let (code, json_out, err) = run(
        &["-f", "deploy/examples/deployment.yaml", "-o", "json"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&json_out).unwrap();
    let example: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/deployment.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let response = mutate(&standin, &router, &example).await;
    assert_eq!(response["allowed"], true, "{response}");
    use base64::Engine;
    let patch: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().expect("a patch"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["workloads"][0]["patch"], patch);
}

#[tokio::test]
async fn broken_manifests_print_the_webhooks_own_denial_and_exit_1() {
    let standin = standin_with_stores().await;
    let endpoints = EndpointPolicy::with_vault(&[VAULT]);
    let router = router(&standin, &endpoints);
    let options = Options {
        endpoints,
        ..Options::default()
    };
    let store_input = vec![Input {
        source: "stores.yaml".into(),
        text: stores()
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect::<Vec<_>>()
            .join("\n---\n"),
    }];

    let mut manifests = Vec::new();
    for (i, case) in broken_cases().iter().enumerate() {
        let manifest = deployment(case, &format!("broken-{i}"));
        let webhook = mutate_denial(&standin, &router, &manifest).await;
        let input = vec![Input {
            source: "manifest.yaml".into(),
            text: serde_json::to_string(&manifest).unwrap(),
        }];
        let report = render::render(&input, Some(&store_input), &options).unwrap();
        let w = &report.workloads[0];
        assert_eq!(w.result, Outcome::Denied, "{}: {w:?}", case.what);
        assert_eq!(
            w.denial.as_deref(),
            Some(webhook.as_str()),
            "{}: render and /mutate disagree",
            case.what
        );
        assert_eq!(report.exit_code(), 1, "{}", case.what);
        manifests.push(manifest);
    }
    // Nothing was written or requested on the webhook's side either: every case is a denial
    // before any side effect.
    assert_eq!(standin.writes("secrets"), 0);
    assert!(standin.token_requests().is_empty());

    // The binary, on all of them at once: each denial printed, exit code 1.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        manifests
            .iter()
            .map(|m| serde_json::to_string(m).unwrap())
            .collect::<Vec<_>>()
            .join("\n---\n"),
    )
    .unwrap();
    let stores_file = dir.path().join("stores.yaml");
    std::fs::write(&stores_file, &store_input[0].text).unwrap();
    let (code, json_out, err) = run(
        &[
            "-f",
            file.to_str().unwrap(),
            "--stores",
            stores_file.to_str().unwrap(),
            "--allowed-vault-servers",
            VAULT,
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(code, 1, "{err}\n{json_out}");
    let report: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(
        report["summary"]["denied"].as_u64(),
        Some(broken_cases().len() as u64)
    );
    let (code, text, _) = run(
        &[
            "-f",
            file.to_str().unwrap(),
            "--stores",
            stores_file.to_str().unwrap(),
            "--allowed-vault-servers",
            VAULT,
        ],
        None,
    );
    assert_eq!(code, 1);
    for w in report["workloads"].as_array().unwrap() {
        let denial = w["denial"].as_str().unwrap();
        assert!(
            text.contains(&format!("  denied: {denial}\n")),
            "{denial}\n{text}"
        );
    }
}

#[tokio::test]
async fn an_invalid_store_prints_the_validating_webhooks_own_denial() {
    let standin = StandIn::start().await;
    let endpoints = EndpointPolicy::with_vault(&[VAULT]);
    let router = router(&standin, &endpoints);
    let rogue = stores()[1].clone();
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "render-store", "kind": {"group": "secret-injector.io", "version": "v1alpha1", "kind": "SecretStore"},
            "resource": {"group": "secret-injector.io", "version": "v1alpha1", "resource": "secretstores"},
            "namespace": "payments", "name": "rogue", "operation": "CREATE",
            "userInfo": {"username": "alice"}, "object": rogue}});
    let response = router
        .clone()
        .oneshot(
            Request::post("/validate")
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&review).unwrap()))
                .unwrap(),
        )
        .await
        .unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["response"]["allowed"], false, "{body}");
    let stores = vec![Input {
        source: "stores.yaml".into(),
        text: serde_json::to_string(&rogue).unwrap(),
    }];
    let options = Options {
        endpoints,
        ..Options::default()
    };
    let report = render::render(&[], Some(&stores), &options).unwrap();
    assert_eq!(
        report.stores.as_ref().unwrap()[0].denial.as_deref(),
        body["response"]["status"]["message"].as_str()
    );
    assert_eq!(report.exit_code(), 1);
}
