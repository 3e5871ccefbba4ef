//! Fuzz/property layer (issue 9): hostile input must never panic, and every denial names the
//! annotation or field it is about. Fixed case counts, no persistence files, so `make test`
//! runs it in a few seconds and the same way every time.
//!
//! The router cases drive the library's Router in-process against a Kubernetes client that
//! points at a closed port: nothing reaches a network, and a review that gets as far as an
//! API call fails cleanly instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use secret_injector::context::{Context, ContextConfig};
use secret_injector::managed::DigestKey;
use secret_injector::metrics::Metrics;
use secret_injector::spec::{self, ParseContext, SpecError};
use secret_injector::store::EndpointPolicy;
use serde_json::{json, Value};
use tower::ServiceExt;

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        // Deterministic: the same inputs on every run.
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        ..Config::default()
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        config(cases),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The router against a stand-in API with the opted-in namespace `payments` and nothing else
/// (no stores, no owners): reviews are decided by their annotations and the trust checks.
/// Keep the StandIn alive as long as the router.
async fn router() -> (axum::Router, k8s_standin::StandIn) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = k8s_standin::StandIn::start().await;
    api.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments", "labels": {"secret-injector.io/inject": "enabled"}}}));
    let ctx = Arc::new(Context::new(
        api.client(),
        ContextConfig {
            deadline: Duration::from_secs(2),
            endpoints: EndpointPolicy::with_vault(&["https://vault.example:8200"]),
            // Nothing arrives later here: do not wait for owners or stores.
            owner_wait: Duration::ZERO,
            store_wait: Duration::ZERO,
            ..ContextConfig::default()
        },
        Metrics::new(),
        DigestKey::random(),
    ));
    (secret_injector::server::router(ctx), api)
}

async fn post(router: &axum::Router, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response = router
        .clone()
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Strings that stress truncation and grammars: ASCII, multi-byte, control characters,
/// separators of the annotation grammar.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[a-z0-9.\\-]{{0,{max}}}")).unwrap(),
        proptest::string::string_regex(&format!("[a-zé漢🦀#/,:\\-. ]{{0,{max}}}")).unwrap(),
        proptest::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect()),
        Just("é".repeat(max.div_ceil(2))),
    ]
}

fn annotation_key() -> impl Strategy<Value = String> {
    let fixed = prop_oneof![
        Just("store"),
        Just("extract"),
        Just("refresh-interval"),
        Just("secret-name"),
        Just("mount-path"),
        Just("containers"),
        Just("rollout"),
        Just("inject"),
        Just("external-secrets"),
        Just("status"),
    ]
    .prop_map(|k| format!("{}{k}", spec::PREFIX));
    prop_oneof![
        3 => fixed,
        3 => text(12).prop_map(|k| format!("{}{k}", spec::ANN_ENV_PREFIX)),
        2 => text(12).prop_map(|k| format!("{}{k}", spec::ANN_FILE_PREFIX)),
        1 => text(12).prop_map(|k| format!("{}{k}", spec::PREFIX)),
    ]
}

fn annotation_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("vault-backend".to_string()),
        Just("ClusterSecretStore/shared".to_string()),
        Just("payments/db#password".to_string()),
        Just("true".to_string()),
        Just("1h".to_string()),
        Just("/etc/secrets".to_string()),
        text(40),
    ]
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(annotation_key(), annotation_value(), 0..12)
}

/// Every spec error names an annotation under our prefix.
fn assert_names_annotation(result: &Result<Option<spec::InjectionSpec>, SpecError>) {
    if let Err(SpecError::Invalid { key, message }) = result {
        assert!(
            key.starts_with(spec::PREFIX),
            "error does not name an annotation: {key:?}: {message}"
        );
        assert!(!message.is_empty());
    }
}

#[test]
fn annotation_grammar_never_panics_and_names_the_annotation() {
    let containers = vec!["app".to_string(), "sidecar".to_string()];
    let names = text(300);
    runner(512)
        .run(&(annotations(), names), |(annotations, name)| {
            let ctx = ParseContext {
                workload_name: Some(&name),
                container_names: &containers,
                min_refresh_interval: Duration::from_secs(10),
            };
            let result = spec::parse(&annotations, &ctx);
            assert_names_annotation(&result);
            if let Ok(Some(s)) = &result {
                for item in &s.items {
                    assert!(
                        spec::is_dns1123_subdomain(&item.secret_name),
                        "{}",
                        item.secret_name
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}

fn full_form_item() -> impl Strategy<Value = Value> {
    let data = proptest::collection::vec(
        (text(10), text(20), proptest::option::of(text(8))).prop_map(|(k, r, p)| {
            let mut remote = json!({"key": r});
            if let Some(p) = p {
                remote["property"] = json!(p);
            }
            json!({"secretKey": k, "remoteRef": remote})
        }),
        0..4,
    );
    let store = prop_oneof![
        Just(json!({"name": "vault-backend"})),
        Just(json!({"name": "shared", "kind": "ClusterSecretStore"})),
        text(20).prop_map(|n| json!({"name": n})),
        Just(json!("not-an-object")),
    ];
    (
        proptest::option::of(text(30)),
        store,
        data,
        proptest::option::of(text(20)),
        any::<bool>(),
        proptest::option::of(text(10)),
    )
        .prop_map(|(name, store, data, mount, env, interval)| {
            let mut item = json!({"storeRef": store, "data": data});
            if let Some(n) = name {
                item["name"] = json!(n);
            }
            let mut inject = json!({"env": env});
            if let Some(m) = mount {
                inject["mountPath"] = json!(m);
            }
            item["inject"] = inject;
            if let Some(i) = interval {
                item["refreshInterval"] = json!(i);
            }
            item
        })
}

#[test]
fn full_form_never_panics_and_names_the_field() {
    let containers = vec!["app".to_string()];
    let documents = prop_oneof![
        3 => proptest::collection::vec(full_form_item(), 0..4)
            .prop_map(|items| serde_json::to_string(&items).unwrap()),
        // The same shapes as YAML (JSON is YAML; block style through a re-indent).
        2 => proptest::collection::vec(full_form_item(), 1..3).prop_map(|items| {
            items
                .iter()
                .map(|i| format!("- {}", serde_json::to_string(i).unwrap()))
                .collect::<Vec<_>>()
                .join("\n")
        }),
        1 => text(200),
    ];
    runner(384)
        .run(&documents, |doc| {
            let annotations = BTreeMap::from([(spec::ANN_EXTERNAL_SECRETS.to_string(), doc)]);
            let ctx = ParseContext {
                workload_name: Some("payments-api"),
                container_names: &containers,
                min_refresh_interval: Duration::from_secs(10),
            };
            let result = spec::parse(&annotations, &ctx);
            assert_names_annotation(&result);
            if let Err(SpecError::Invalid { key, .. }) = &result {
                assert!(key.starts_with(spec::ANN_EXTERNAL_SECRETS), "{key}");
            }
            Ok(())
        })
        .unwrap();
}

fn json_value(words: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        proptest::sample::select(words).prop_map(Value::from),
        text(30).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(proptest::sample::select(words), inner, 0..6).prop_map(
                |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
        ]
    })
}

const STORE_WORDS: &[&str] = &[
    "provider",
    "vault",
    "aws",
    "server",
    "path",
    "version",
    "v1",
    "v2",
    "auth",
    "kubernetes",
    "role",
    "audiences",
    "mountPath",
    "region",
    "service",
    "SecretsManager",
    "endpoint",
    "conditions",
    "namespaces",
    "namespaceSelector",
    "matchLabels",
    "caBundle",
    "namespace",
    "https://vault.example:8200",
    "http://169.254.169.254",
    "eu-west-1",
    "secret",
];

#[test]
fn store_validation_never_panics_and_names_the_field() {
    let endpoints = EndpointPolicy::with_vault(&["https://vault.example:8200"]);
    let kinds = prop_oneof![Just("SecretStore"), Just("ClusterSecretStore")];
    runner(512)
        .run(&(kinds, json_value(STORE_WORDS)), |(kind, spec_value)| {
            let object = json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": kind,
                "metadata": {"name": "s", "namespace": "payments"}, "spec": spec_value});
            let verdict = secret_injector::store::validate_store(kind, &object, &endpoints);
            for e in &verdict.errors {
                assert!(!e.path.is_empty() && !e.message.is_empty(), "{e:?}");
            }
            Ok(())
        })
        .unwrap();
}

fn pod_review(name: &str, annotations: &BTreeMap<String, String>, extra: Value) -> Value {
    let mut review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0d7f5b8e-fuzz", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "payments", "operation": "CREATE",
            "userInfo": {"username": "fuzz"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "payments", "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "x"}]}},
            "dryRun": true
        }
    });
    super_merge(&mut review, extra);
    review
}

fn super_merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                super_merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

const REVIEW_WORDS: &[&str] = &[
    "request",
    "uid",
    "object",
    "oldObject",
    "metadata",
    "spec",
    "containers",
    "name",
    "annotations",
    "ownerReferences",
    "kind",
    "Pod",
    "operation",
    "CREATE",
    "UPDATE",
    "namespace",
    "dryRun",
    "serviceAccountName",
    "env",
    "volumes",
    "initContainers",
];

#[test]
fn admission_review_decoding_never_panics() {
    let rt = rt();
    let (router, _api) = rt.block_on(router());
    // Raw bytes and JSON of the right vocabulary but arbitrary shape.
    let bodies = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        json_value(REVIEW_WORDS).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (json_value(REVIEW_WORDS), json_value(REVIEW_WORDS)).prop_map(|(object, extra)| {
            serde_json::to_vec(&pod_review(
                "p",
                &BTreeMap::new(),
                json!({"request": {"object": object}, "x": extra}),
            ))
            .unwrap()
        }),
    ];
    let paths = prop_oneof![Just("/mutate"), Just("/validate")];
    runner(256)
        .run(&(paths, bodies), |(path, body)| {
            let (status, response) = rt.block_on(post(&router, path, body));
            assert!(
                status == 200 || status == 400 || status == 413,
                "unexpected status {status}: {response}"
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn annotated_reviews_through_the_router_deny_by_annotation() {
    let rt = rt();
    let (router, _api) = rt.block_on(router());
    runner(192)
        .run(&(annotations(), text(300)), |(annotations, name)| {
            let review = pod_review(&name, &annotations, json!({}));
            let (status, response) = rt.block_on(post(
                &router,
                "/mutate",
                serde_json::to_vec(&review).unwrap(),
            ));
            assert_eq!(status, 200, "{response}");
            let r = &response["response"];
            assert_eq!(r["uid"], "0d7f5b8e-fuzz");
            if r["allowed"] == false {
                let message = r["status"]["message"].as_str().unwrap_or_default();
                assert!(
                    !message.is_empty(),
                    "a denial without a message: {response}"
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn multi_byte_300_byte_name_is_a_clean_denial() {
    let rt = rt();
    let (router, _api) = rt.block_on(router());
    let name = "漢".repeat(100);
    assert_eq!(name.len(), 300);
    let annotations = BTreeMap::from([
        (spec::ANN_STORE.to_string(), "vault-backend".to_string()),
        (
            format!("{}DB_PASSWORD", spec::ANN_ENV_PREFIX),
            "payments/db#password".to_string(),
        ),
    ]);
    let review = pod_review(&name, &annotations, json!({}));
    let (status, response) = rt.block_on(post(
        &router,
        "/mutate",
        serde_json::to_vec(&review).unwrap(),
    ));
    assert_eq!(status, 200);
    assert_eq!(response["response"]["allowed"], false, "{response}");
    let message = response["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains(spec::ANN_SECRET_NAME), "{message}");
}

#[test]
fn too_many_keys_is_a_denial_naming_count_and_cap() {
    let containers = vec!["app".to_string()];
    let ctx = ParseContext {
        workload_name: Some("payments-api"),
        container_names: &containers,
        min_refresh_interval: Duration::from_secs(10),
    };
    let mut annotations: BTreeMap<String, String> = (0..10_000)
        .map(|i| {
            (
                format!("{}K{i}", spec::ANN_ENV_PREFIX),
                format!("payments/k{i}"),
            )
        })
        .collect();
    annotations.insert(spec::ANN_STORE.into(), "vault-backend".into());
    let Err(SpecError::Invalid { key, message }) = spec::parse(&annotations, &ctx) else {
        panic!("10,000 keys admitted")
    };
    assert!(key.contains(spec::ANN_ENV_PREFIX), "{key}");
    assert!(
        message.contains("10000") && message.contains(&spec::MAX_KEYS_PER_POD.to_string()),
        "{message}"
    );

    // The full form counts data entries over every item.
    let items: Vec<Value> = (0..3)
        .map(|i| json!({"name": format!("s{i}"), "storeRef": {"name": "vault-backend"}, "inject": {"mountPath": format!("/m{i}")},
            "data": (0..100).map(|j| json!({"secretKey": format!("k{j}"), "remoteRef": {"key": format!("p/{j}")}})).collect::<Vec<_>>()}))
        .collect();
    let annotations = BTreeMap::from([(
        spec::ANN_EXTERNAL_SECRETS.to_string(),
        serde_json::to_string(&items).unwrap(),
    )]);
    let Err(SpecError::Invalid { key, message }) = spec::parse(&annotations, &ctx) else {
        panic!("300 keys admitted")
    };
    assert_eq!(key, spec::ANN_EXTERNAL_SECRETS);
    assert!(message.contains("300"), "{message}");

    // At the cap: fine.
    let mut annotations: BTreeMap<String, String> = (0..spec::MAX_KEYS_PER_POD)
        .map(|i| {
            (
                format!("{}K{i}", spec::ANN_ENV_PREFIX),
                format!("payments/k{i}"),
            )
        })
        .collect();
    annotations.insert(spec::ANN_STORE.into(), "vault-backend".into());
    assert!(spec::parse(&annotations, &ctx).unwrap().is_some());
}

/// The fast read of `/mutate` (`admission::review`) against the typed decoder: whatever the
/// fast read takes, the typed decoder takes too, to the same request fields and the same pod
/// view. (What the fast read leaves alone goes to the typed decoder, so answers cannot differ.)
fn fast_read_agrees(body: &[u8]) -> Result<bool, TestCaseError> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::core::admission::{AdmissionRequest, AdmissionReview};
    use secret_injector::admission::review::{read_fast, PodRequest};
    use secret_injector::pod::PodView;

    let Some(fast) = read_fast(body) else {
        return Ok(false);
    };
    let typed = serde_json::from_slice::<AdmissionReview<Pod>>(body);
    let Ok(typed) = typed else {
        return Err(TestCaseError::fail(format!(
            "the fast read took a review the typed decoder refuses ({:?}): {}",
            typed.err(),
            String::from_utf8_lossy(body)
        )));
    };
    let req: AdmissionRequest<Pod> = typed
        .try_into()
        .map_err(|_| TestCaseError::fail("the fast read took a review without a request"))?;
    prop_assert_eq!(&fast.request, &PodRequest::of(&req));
    let typed_pod = req.object.as_ref().map(PodView::of);
    prop_assert_eq!(fast.pod.as_ref(), typed_pod.as_ref());
    Ok(true)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn fast_read_takes_the_fixtures_to_the_typed_values() {
    for name in [
        "pod-create-rich.json",
        "pod-create-short-form.json",
        "pod-create-short-form-dry-run.json",
        "pod-create-no-annotations.json",
        "pod-create-opted-out.json",
        "pod-create-unknown-annotation.json",
        "pod-update-short-form.json",
    ] {
        assert!(
            fast_read_agrees(&fixture_bytes(name)).unwrap(),
            "{name} not taken by the fast read"
        );
    }
    // Left to the typed decoder: no request, an oldObject, an object that is not a Pod.
    assert!(!fast_read_agrees(&fixture_bytes("review-without-request.json")).unwrap());
    assert!(!fast_read_agrees(&fixture_bytes("configmap-create.json")).unwrap());
    let mut update: Value = serde_json::from_slice(&fixture_bytes("pod-create-rich.json")).unwrap();
    update["request"]["oldObject"] = update["request"]["object"].clone();
    assert!(!fast_read_agrees(&serde_json::to_vec(&update).unwrap()).unwrap());
}

/// Every node of `value` by its path (object keys and array indexes).
fn paths(value: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                at.push(k.clone());
                paths(v, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                at.push(i.to_string());
                paths(v, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn node_at<'v>(value: &'v mut Value, path: &[String]) -> &'v mut Value {
    path.iter().fold(value, |v, k| match v {
        Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        other => &mut other[k.as_str()],
    })
}

/// Values a perturbation puts in: every JSON type, numbers at the edges of i32/i64/f64,
/// timestamps good and bad, strings with escapes, objects with keys of the Pod schema.
fn odd_value() -> impl Strategy<Value = Value> {
    let words: &'static [&'static str] = &[
        "name",
        "image",
        "env",
        "value",
        "valueFrom",
        "secretKeyRef",
        "key",
        "envFrom",
        "secretRef",
        "volumeMounts",
        "mountPath",
        "volumes",
        "secret",
        "secretName",
        "containers",
        "initContainers",
        "annotations",
        "labels",
        "ownerReferences",
        "controller",
        "uid",
        "kind",
        "apiVersion",
        "Pod",
        "v1",
        "containerPort",
        "port",
        "creationTimestamp",
        "2024-05-01T10:00:00Z",
        "not-a-time",
        "fieldsV1",
        "sizeLimit",
        "serviceAccountName",
        "metadata",
        "spec",
        "status",
        "runAsUser",
        "priority",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![
            Just(json!(2147483647)),
            Just(json!(2147483648u64)),
            Just(json!(-2147483649i64)),
            Just(json!(9223372036854775807i64)),
            Just(json!(18446744073709551615u64)),
            Just(json!(1.5)),
            Just(json!(1e300)),
            any::<i64>().prop_map(Value::from),
        ],
        proptest::sample::select(words).prop_map(Value::from),
        Just(json!("a \"quoted\" \u{e9} \\ value")),
        text(12).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            proptest::collection::btree_map(proptest::sample::select(words), inner, 0..4).prop_map(
                |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
        ]
    })
}

#[test]
fn fast_read_never_takes_what_the_typed_decoder_refuses() {
    let rich: Value = serde_json::from_slice(&fixture_bytes("pod-create-rich.json")).unwrap();
    let mut all = Vec::new();
    paths(&rich, &mut Vec::new(), &mut all);
    let taken = std::cell::Cell::new(0u32);
    let perturbed = (0..all.len(), odd_value(), any::<bool>());
    runner(1024)
        .run(&perturbed, |(at, value, insert)| {
            let mut review = rich.clone();
            let node = node_at(&mut review, &all[at]);
            match (insert, node) {
                // Add a key beside the existing ones (the Pod's own field names included).
                (true, Value::Object(m)) => {
                    let key = value
                        .as_object()
                        .and_then(|o| o.keys().next().cloned())
                        .unwrap_or_else(|| "name".into());
                    m.insert(key, value);
                }
                (_, node) => *node = value,
            }
            if fast_read_agrees(&serde_json::to_vec(&review).unwrap())? {
                taken.set(taken.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    // Most perturbations are still Pods; the property must not hold vacuously.
    assert!(
        taken.get() > 200,
        "only {} perturbed reviews taken",
        taken.get()
    );
}

/// Every node of the rich review replaced, in turn, by each value of a fixed table of odd
/// ones: exhaustive over single replacements, so every field of the Pod schema that the
/// review carries is tried with every JSON type.
#[test]
fn fast_read_agrees_on_every_single_odd_replacement() {
    let rich: Value = serde_json::from_slice(&fixture_bytes("pod-create-rich.json")).unwrap();
    let mut all = Vec::new();
    paths(&rich, &mut Vec::new(), &mut all);
    let odd = [
        Value::Null,
        json!(true),
        json!(7),
        json!(-2147483649i64),
        json!(18446744073709551615u64),
        json!(1.5),
        json!("not-a-time"),
        json!("2024-05-01T10:00:00Z"),
        json!("\u{e9}\"\\"),
        json!([]),
        json!([null]),
        json!({}),
        json!({"name": null}),
    ];
    let mut taken = 0;
    for at in &all {
        for value in &odd {
            let mut review = rich.clone();
            *node_at(&mut review, at) = value.clone();
            if fast_read_agrees(&serde_json::to_vec(&review).unwrap())
                .unwrap_or_else(|e| panic!("at {at:?} = {value}: {e}"))
            {
                taken += 1;
            }
        }
    }
    assert!(taken > all.len(), "only {taken} replacements taken");
}

#[test]
fn fast_read_agrees_on_arbitrary_reviews() {
    let bodies = prop_oneof![
        json_value(REVIEW_WORDS).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (json_value(REVIEW_WORDS), json_value(REVIEW_WORDS)).prop_map(|(object, extra)| {
            serde_json::to_vec(&pod_review(
                "p",
                &BTreeMap::new(),
                json!({"request": {"object": object}, "x": extra}),
            ))
            .unwrap()
        }),
        (json_value(REVIEW_WORDS), json_value(REVIEW_WORDS)).prop_map(|(spec, meta)| {
            serde_json::to_vec(&pod_review(
                "p",
                &BTreeMap::new(),
                json!({"request": {"object": {"spec": spec, "metadata": meta}}}),
            ))
            .unwrap()
        }),
    ];
    runner(512)
        .run(&bodies, |body| fast_read_agrees(&body).map(drop))
        .unwrap();
}
