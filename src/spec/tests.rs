use super::*;

fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn containers() -> Vec<String> {
    vec!["app".into(), "sidecar".into(), "init-db".into()]
}

fn parse_with(pairs: &[(&str, &str)]) -> Result<Option<InjectionSpec>, SpecError> {
    let names = containers();
    parse(
        &ann(pairs),
        &ParseContext {
            workload_name: Some("payments-api"),
            container_names: &names,
            min_refresh_interval: Duration::from_secs(10),
        },
    )
}

fn err_key(pairs: &[(&str, &str)]) -> (String, String) {
    match parse_with(pairs) {
        Err(SpecError::Invalid { key, message }) => (key, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn short_form_env_and_files() {
    let spec = parse_with(&[
        ("secret-injector.io/store", "vault-backend"),
        ("secret-injector.io/env.DB_USERNAME", "payments/db#username"),
        ("secret-injector.io/env.DB_PASSWORD", "payments/db#password"),
        ("secret-injector.io/file.ca.crt", "payments/tls#ca"),
        ("secret-injector.io/refresh-interval", "1h30m"),
        ("secret-injector.io/status", "injected"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(spec.items.len(), 1);
    let item = &spec.items[0];
    assert_eq!(item.secret_name, "payments-api-injected");
    assert_eq!(
        item.store,
        StoreRef {
            kind: StoreKind::SecretStore,
            name: "vault-backend".into()
        }
    );
    assert_eq!(item.refresh_interval, Duration::from_secs(5400));
    assert_eq!(item.exposure.env_keys, vec!["DB_PASSWORD", "DB_USERNAME"]);
    let files = item.exposure.files.as_ref().unwrap();
    assert_eq!(files.mount_path, DEFAULT_MOUNT_PATH);
    assert_eq!(files.keys.as_deref(), Some(&["ca.crt".to_string()][..]));
    assert!(!item.exposure.env_from);
    let pw = item
        .data
        .iter()
        .find(|d| d.secret_key == "DB_PASSWORD")
        .unwrap();
    assert_eq!(
        pw.remote_ref,
        RemoteRef {
            key: "payments/db".into(),
            property: Some("password".into()),
            version: None
        }
    );
}

#[test]
fn short_form_cluster_store_and_extract() {
    let spec = parse_with(&[
        ("secret-injector.io/store", "ClusterSecretStore/shared"),
        (
            "secret-injector.io/extract",
            "payments/fraud-feed, payments/other",
        ),
        ("secret-injector.io/containers", "app"),
        ("secret-injector.io/rollout", "none"),
    ])
    .unwrap()
    .unwrap();
    let item = &spec.items[0];
    assert_eq!(item.store.kind, StoreKind::ClusterSecretStore);
    assert_eq!(item.extract.len(), 2);
    assert!(item.exposure.env_from);
    assert_eq!(item.containers.as_deref(), Some(&["app".to_string()][..]));
    assert_eq!(item.rollout, Rollout::None);
}

#[test]
fn opt_out_and_nothing_requested() {
    assert_eq!(
        parse_with(&[
            ("secret-injector.io/inject", "false"),
            ("secret-injector.io/store", "x")
        ]),
        Ok(None)
    );
    assert_eq!(
        parse_with(&[
            ("other.io/x", "y"),
            ("secret-injector.io/status", "injected")
        ]),
        Ok(None)
    );
    assert!(!wants_injection(&ann(&[(
        "secret-injector.io/status",
        "injected"
    )])));
    assert!(!wants_injection(&ann(&[
        ("secret-injector.io/inject", "false"),
        ("secret-injector.io/store", "x")
    ])));
    assert!(wants_injection(&ann(&[(
        "secret-injector.io/env.A",
        "a/b"
    )])));
}

#[test]
fn every_short_form_error_names_its_key() {
    type Case = (
        Vec<(&'static str, &'static str)>,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/bogus", "1"),
            ],
            "secret-injector.io/bogus",
            "unknown annotation",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/env.A", "a"),
                ("secret-injector.io/refresh-interval", "1d"),
            ],
            "secret-injector.io/refresh-interval",
            "not a duration",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/env.A", "a"),
                ("secret-injector.io/refresh-interval", "2s"),
            ],
            "secret-injector.io/refresh-interval",
            "minimum",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/env.", "a"),
            ],
            "secret-injector.io/env.",
            "empty",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/env.1BAD", "a"),
            ],
            "secret-injector.io/env.1BAD",
            "environment variable name",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/env.A", ""),
            ],
            "secret-injector.io/env.A",
            "remote key is empty",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/env.A", "a/../../sys"),
            ],
            "secret-injector.io/env.A",
            "'..'",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/env.A", "a#"),
            ],
            "secret-injector.io/env.A",
            "property",
        ),
        (
            vec![("secret-injector.io/env.A", "a/b")],
            "secret-injector.io/store",
            "missing",
        ),
        (
            vec![
                ("secret-injector.io/store", "Bad_Name"),
                ("secret-injector.io/env.A", "a/b"),
            ],
            "secret-injector.io/store",
            "not a valid store name",
        ),
        (
            vec![
                ("secret-injector.io/store", "Foo/x"),
                ("secret-injector.io/env.A", "a/b"),
            ],
            "secret-injector.io/store",
            "unknown store kind",
        ),
        (
            vec![("secret-injector.io/store", "s")],
            "secret-injector.io/store",
            "nothing is requested",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/env.A", "a"),
                ("secret-injector.io/file.A", "b"),
            ],
            "secret-injector.io/file.A",
            "duplicate target key",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/env.A", "a"),
                ("secret-injector.io/containers", "app,nope"),
            ],
            "secret-injector.io/containers",
            "not in this pod",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/env.A", "a"),
                ("secret-injector.io/rollout", "always"),
            ],
            "secret-injector.io/rollout",
            "restart",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/env.A", "a"),
                ("secret-injector.io/secret-name", "Bad"),
            ],
            "secret-injector.io/secret-name",
            "not a valid Secret name",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/file.a", "a"),
                ("secret-injector.io/mount-path", "rel/path"),
            ],
            "secret-injector.io/mount-path",
            "absolute",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/extract", "a,,b"),
            ],
            "secret-injector.io/extract",
            "empty entry",
        ),
        (
            vec![("secret-injector.io/inject", "maybe")],
            "secret-injector.io/inject",
            "true",
        ),
        (
            vec![("secret-injector.io/rollout", "none")],
            "secret-injector.io/rollout",
            "no effect",
        ),
        (
            vec![
                ("secret-injector.io/store", "s"),
                ("secret-injector.io/env.A", "a"),
                ("secret-injector.io/external-secrets", "[]"),
            ],
            "secret-injector.io/external-secrets",
            "cannot be mixed",
        ),
    ];
    for (pairs, key, fragment) in cases {
        let (k, m) = err_key(&pairs);
        assert_eq!(k, key, "pairs {pairs:?}: message {m}");
        assert!(
            m.contains(fragment),
            "pairs {pairs:?}: {m:?} should contain {fragment:?}"
        );
    }
}

#[test]
fn full_form_two_items() {
    let yaml = r#"
- name: payments-db
  storeRef: {name: vault-backend, kind: SecretStore}
  refreshInterval: 1h
  data:
    - secretKey: DB_PASSWORD
      remoteRef: {key: payments/db, property: password, version: 3}
- name: fraud-feed
  storeRef: {name: aws, kind: ClusterSecretStore}
  refreshInterval: 0
  dataFrom:
    - extract: {key: payments/fraud-feed}
  inject: {env: true, mountPath: /etc/fraud}
  containers: [app]
"#;
    let spec = parse_with(&[("secret-injector.io/external-secrets", yaml)])
        .unwrap()
        .unwrap();
    assert_eq!(spec.items.len(), 2);
    assert_eq!(
        spec.items[0].data[0].remote_ref.version.as_deref(),
        Some("3")
    );
    assert_eq!(spec.items[0].exposure.env_keys, vec!["DB_PASSWORD"]);
    assert_eq!(spec.items[1].refresh_interval, Duration::ZERO);
    assert!(spec.items[1].exposure.env_from);
    assert_eq!(
        spec.items[1].exposure.files.as_ref().unwrap().mount_path,
        "/etc/fraud"
    );
    assert_eq!(spec.items[1].store.kind, StoreKind::ClusterSecretStore);
}

#[test]
fn full_form_accepts_json() {
    let json = r#"[{"name":"a","storeRef":{"name":"s"},"data":[{"secretKey":"K","remoteRef":{"key":"x/y"}}]}]"#;
    let spec = parse_with(&[("secret-injector.io/external-secrets", json)])
        .unwrap()
        .unwrap();
    assert_eq!(spec.items[0].secret_name, "a");
}

#[test]
fn full_form_errors_name_item_and_field() {
    let cases = [
        ("not: [a list", "secret-injector.io/external-secrets", "YAML or JSON list"),
        ("[]", "secret-injector.io/external-secrets", "empty"),
        ("- storeRef: {name: s}\n  data: [{secretKey: A, remoteRef: {key: a}}]", "secret-injector.io/external-secrets[0].name", "missing"),
        ("- name: a\n  storeRef: {name: s}\n  data: [{secretKey: A, remoteRef: {key: a}}, {secretKey: A, remoteRef: {key: b}}]", "secret-injector.io/external-secrets[0].data", "duplicate target key"),
        ("- name: a\n  storeRef: {name: s, kind: Vault}\n  data: [{secretKey: A, remoteRef: {key: a}}]", "secret-injector.io/external-secrets[0].storeRef.kind", "SecretStore"),
        ("- name: a\n  storeRef: {name: s}\n  refreshInterval: soon\n  data: [{secretKey: A, remoteRef: {key: a}}]", "secret-injector.io/external-secrets[0].refreshInterval", "duration"),
        ("- name: a\n  storeRef: {name: s}\n  data: [{secretKey: 'a/b', remoteRef: {key: a}}]", "secret-injector.io/external-secrets[0].data[0].secretKey", "Secret key"),
        ("- name: a\n  storeRef: {name: s}", "secret-injector.io/external-secrets[0]", "nothing to inject"),
        ("- name: a\n  storeRef: {name: s}\n  data: [{secretKey: A, remoteRef: {key: a}}]\n- name: b\n  storeRef: {name: s}\n  data: [{secretKey: A, remoteRef: {key: b}}]", "secret-injector.io/external-secrets[1]", "duplicate env var"),
        ("- name: a\n  storeRef: {name: s}\n  data: [{secretKey: A, remoteRef: {key: a}}]\n- name: a\n  storeRef: {name: s}\n  data: [{secretKey: B, remoteRef: {key: b}}]", "secret-injector.io/external-secrets[1]", "also used by"),
        ("- name: a\n  storeRef: {name: s}\n  data: [{secretKey: A, remoteRef: {key: a}}]\n  containers: [ghost]", "secret-injector.io/external-secrets[0].containers", "not in this pod"),
        ("- name: a\n  storeRef: {name: s}\n  dataFrom: [{find: {path: x}}]", "secret-injector.io/external-secrets", "find"),
    ];
    for (yaml, key, fragment) in cases {
        let (k, m) = err_key(&[("secret-injector.io/external-secrets", yaml)]);
        assert_eq!(k, key, "yaml {yaml:?}: {m}");
        assert!(
            m.contains(fragment),
            "yaml {yaml:?}: {m:?} should contain {fragment:?}"
        );
    }
}

#[test]
fn default_secret_name_stays_valid() {
    assert_eq!(
        default_secret_name(Some("api")).as_deref(),
        Some("api-injected")
    );
    assert_eq!(default_secret_name(None), None);
    let long = "a".repeat(300);
    let name = default_secret_name(Some(&long)).unwrap();
    assert!(is_dns1123_subdomain(&name) && name.len() <= 253);
}
