//! PKI issuance: verification against the CA, and leases only on request.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::json;
use test_rig::openbao::OpenBao;

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------------------------

/// `pki/issue/<role>` with common_name + ttl ⇒ a certificate that `openssl verify` accepts
/// against the issuing CA, with that CN and lifetime; no lease unless the role sets
/// `generate_lease` (then a revocable lease under `pki/issue/<role>/`).
#[tokio::test]
async fn pki_issue_verifies_against_the_ca_and_has_no_lease_by_default() {
    let bao = OpenBao::start().await;
    must(&bao, Method::POST, "sys/mounts/pki", json!({"type": "pki"})).await;
    must(
        &bao,
        Method::POST,
        "sys/mounts/pki/tune",
        json!({"max_lease_ttl": "87600h"}),
    )
    .await;
    let root_ca = must(
        &bao,
        Method::POST,
        "pki/root/generate/internal",
        json!({"common_name": "Payments Test Root CA", "ttl": "8760h"}),
    )
    .await;
    let ca_pem = root_ca["data"]["certificate"].as_str().unwrap().to_string();
    for (role, lease) in [("web", false), ("web-leased", true)] {
        must(
            &bao,
            Method::POST,
            &format!("pki/roles/{role}"),
            json!({"allowed_domains": ["payments.svc"], "allow_subdomains": true,
                   "max_ttl": "72h", "generate_lease": lease}),
        )
        .await;
    }

    let issued = must(
        &bao,
        Method::POST,
        "pki/issue/web",
        json!({"common_name": "api.payments.svc", "ttl": "1h"}),
    )
    .await;
    let d = &issued["data"];
    for field in [
        "certificate",
        "private_key",
        "issuing_ca",
        "serial_number",
        "expiration",
    ] {
        assert!(!d[field].is_null(), "{field} missing: {issued}");
    }
    assert_eq!(d["issuing_ca"].as_str().unwrap().trim(), ca_pem.trim());
    // No lease: empty lease_id, zero duration. Renewal is re-issue; revocation is pki/revoke.
    assert_eq!(issued["lease_id"], "", "{issued}");
    assert_eq!(issued["lease_duration"], 0);

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let crt = dir.path().join("tls.crt");
    std::fs::write(&ca, &ca_pem).unwrap();
    std::fs::write(&crt, d["certificate"].as_str().unwrap()).unwrap();
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("run openssl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
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
        "-in".as_ref(),
        crt.as_os_str(),
    ]);
    assert!(ok && out.contains("CN = api.payments.svc"), "{out}");
    let ttl = d["expiration"].as_i64().unwrap()
        - SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
    assert!((3500..=3600).contains(&ttl), "requested 1h, got {ttl}s");
    // A foreign CA does not verify it.
    let other = OpenBao::start().await;
    must(
        &other,
        Method::POST,
        "sys/mounts/pki",
        json!({"type": "pki"}),
    )
    .await;
    let foreign = must(
        &other,
        Method::POST,
        "pki/root/generate/internal",
        json!({"common_name": "Payments Test Root CA", "ttl": "8760h"}),
    )
    .await;
    let foreign_ca = dir.path().join("foreign.pem");
    std::fs::write(
        &foreign_ca,
        foreign["data"]["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let (ok, _) = openssl(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        foreign_ca.as_os_str(),
        crt.as_os_str(),
    ]);
    assert!(
        !ok,
        "a foreign CA with the same name must not verify the certificate"
    );
    // A name outside the role: refused.
    let err = bao
        .api(
            Method::POST,
            "pki/issue/web",
            Some(json!({"common_name": "evil.example.com"})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 400, "{err:?}");

    // generate_lease=true: a lease under pki/issue/<role>/, revocable through sys/leases.
    let leased = must(
        &bao,
        Method::POST,
        "pki/issue/web-leased",
        json!({"common_name": "db.payments.svc", "ttl": "1h"}),
    )
    .await;
    let lease_id = leased["lease_id"].as_str().unwrap().to_string();
    assert!(lease_id.starts_with("pki/issue/web-leased/"), "{leased}");
    assert!(leased["lease_duration"].as_u64().unwrap() > 3500);
    let serial = leased["data"]["serial_number"]
        .as_str()
        .unwrap()
        .to_string();
    must(
        &bao,
        Method::PUT,
        "sys/leases/revoke",
        json!({"lease_id": lease_id}),
    )
    .await;
    let cert = must(&bao, Method::GET, &format!("pki/cert/{serial}"), json!({})).await;
    assert!(
        cert["data"]["revocation_time"].as_i64().unwrap_or(0) > 0,
        "revoking the lease revokes the certificate: {cert}"
    );
}
