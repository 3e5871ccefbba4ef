//! PKI certificates end to end: a `certificate` item ⇒ a `kubernetes.io/tls` Secret that
//! verifies against the issuing CA, mounted as files, re-issued at 2/3 of its lifetime
//! without a rollout.

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use support::start_webhook;
use test_rig::dynamic::{self, admit, annotation, must, secret, FAST};
use test_rig::payments::*;

fn openssl(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn a_certificate_item_is_a_tls_secret_verifying_against_the_ca_and_renewed_in_place() {
    let rig = Rig::start().await;
    must(&rig, Method::POST, "sys/mounts/pki", json!({"type": "pki"})).await;
    must(
        &rig,
        Method::POST,
        "sys/mounts/pki/tune",
        json!({"max_lease_ttl": "87600h"}),
    )
    .await;
    let root = must(
        &rig,
        Method::POST,
        "pki/root/generate/internal",
        json!({"common_name": "Payments Test Root CA", "ttl": "8760h"}),
    )
    .await;
    let ca_pem = root["data"]["certificate"].as_str().unwrap().to_string();
    must(
        &rig,
        Method::POST,
        "pki/roles/payments",
        json!({"allowed_domains": ["payments.svc"], "allow_subdomains": true, "max_ttl": "72h"}),
    )
    .await;
    rig.bao
        .write_policy(
            "payments-pki",
            r#"path "pki/issue/payments" { capabilities = ["update"] }
path "auth/token/create-orphan" { capabilities = ["update"] }"#,
        )
        .await;
    dynamic::kubernetes_role(&rig, "payments", &["payments-read", "payments-pki"], 1200).await;
    let webhook = start_webhook(&rig.standin, &FAST).await;

    let items = r#"
- name: payments-tls
  storeRef: {name: vault-backend}
  certificate: {path: pki/issue/payments, commonName: api.payments.svc, altNames: [api.payments.svc, grpc.payments.svc], ttl: 15s}
"#;
    let t0 = Instant::now();
    let response = admit(
        &rig,
        &webhook,
        "uid-1",
        REPLICASET,
        json!({"secret-injector.io/external-secrets": items}),
    )
    .await;
    let s = secret(&rig, "payments-tls");
    assert_eq!(s["type"], "kubernetes.io/tls");
    let data = secret_data(&s);
    assert_eq!(data["ca.crt"].trim(), ca_pem.trim());
    assert_eq!(
        annotation(&rig, "payments-tls", "secret-injector.io/rollout").as_deref(),
        Some("none")
    );
    let patch = serde_json::to_string(&decoded_patch(&response).unwrap()).unwrap();
    assert!(
        patch.contains("/var/run/secret-injector/payments-tls"),
        "{patch}"
    );
    assert!(
        !patch.contains("envFrom") && !patch.contains("secretKeyRef"),
        "{patch}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (ca, crt, key) = (
        dir.path().join("ca.crt"),
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
    );
    let check = |data: &std::collections::BTreeMap<String, String>| {
        std::fs::write(&ca, &data["ca.crt"]).unwrap();
        std::fs::write(&crt, &data["tls.crt"]).unwrap();
        std::fs::write(&key, &data["tls.key"]).unwrap();
        let (ok, out) = openssl(&[
            "verify".as_ref(),
            "-CAfile".as_ref(),
            ca.as_os_str(),
            crt.as_os_str(),
        ]);
        assert!(ok, "openssl verify: {out}");
        let (ok, out) = openssl(&[
            "x509".as_ref(),
            "-noout".as_ref(),
            "-subject".as_ref(),
            "-ext".as_ref(),
            "subjectAltName".as_ref(),
            "-in".as_ref(),
            crt.as_os_str(),
        ]);
        assert!(
            ok && out.contains("CN = api.payments.svc") && out.contains("grpc.payments.svc"),
            "{out}"
        );
        let (_, cert_pub) = openssl(&[
            "x509".as_ref(),
            "-noout".as_ref(),
            "-pubkey".as_ref(),
            "-in".as_ref(),
            crt.as_os_str(),
        ]);
        let (_, key_pub) = openssl(&[
            "pkey".as_ref(),
            "-pubout".as_ref(),
            "-in".as_ref(),
            key.as_os_str(),
        ]);
        assert_eq!(cert_pub, key_pub, "tls.key belongs to tls.crt");
    };
    check(&data);

    // Re-issued at about 2/3 of its 15 s lifetime, before it expires; no rollout.
    wait_for("the certificate re-issued", Duration::from_secs(15), || {
        secret_data(&secret(&rig, "payments-tls"))["tls.crt"] != data["tls.crt"]
    })
    .await;
    let at = t0.elapsed();
    assert!(
        at >= Duration::from_secs(8) && at < Duration::from_secs(15),
        "re-issued at {at:?}"
    );
    let renewed = secret_data(&secret(&rig, "payments-tls"));
    check(&renewed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rig.standin.count("patch", "deployments"),
        0,
        "rollout: none"
    );

    let private_keys = [data["tls.key"].as_str(), renewed["tls.key"].as_str()];
    let key_body = |k: &str| {
        k.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    let bodies: Vec<String> = private_keys.iter().map(|k| key_body(k)).collect();
    let sentinels: Vec<&str> = bodies.iter().map(String::as_str).collect();
    assert_no_leak("webhook log", &webhook.logs(), &sentinels);
    assert_no_leak("patch", &patch, &sentinels);
    assert_no_leak(
        "annotations",
        &secret(&rig, "payments-tls")["metadata"].to_string(),
        &sentinels,
    );
    assert_no_leak(
        "events",
        &serde_json::to_string(&rig.standin.objects("events.events.k8s.io")).unwrap(),
        &sentinels,
    );
    assert_no_leak("metrics", &webhook.metrics().await, &sentinels);
}
