//! `secret-injector certs`: a CA, a serving certificate for the webhook Service's DNS names,
//! an HMAC key, and the caBundle written into the webhook configurations.

use std::path::{Path, PathBuf};

use base64::Engine;
use k8s_openapi::jiff::{civil::Date, tz::TimeZone, Span, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::config::CertsArgs;

/// Why `secret-injector certs` (or [`generate`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("a validity of {days} days is out of range")]
    Validity { days: u32 },
    #[error("{action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has no caBundle field to fill", .0.display())]
    NoCaBundle(PathBuf),
}

type Result<T, E = CertsError> = std::result::Result<T, E>;

fn rcgen_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertsError {
    move |source| CertsError::Generate { what, source }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CertsError {
    let path = path.to_path_buf();
    move |source| CertsError::Io {
        action,
        path,
        source,
    }
}

/// `today` plus `days` as (year, month, day), for `rcgen::date_time_ymd` (midnight UTC).
/// Certificates start the day before they are made (clock skew between the generator and
/// the API server).
fn ymd(today: Date, days: i64) -> Result<(i32, u8, u8)> {
    // `--days` comes from the command line: out-of-range spans are an error, not a panic.
    let d = Span::new()
        .try_days(days)
        .and_then(|span| today.checked_add(span))
        .map_err(|_| CertsError::Validity {
            days: u32::try_from(days.unsigned_abs()).unwrap_or(u32::MAX),
        })?;
    // Months are 1..=12 and days 1..=31: the casts cannot truncate.
    Ok((i32::from(d.year()), d.month() as u8, d.day() as u8))
}

pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Create a CA and a serving certificate for `dns_names` and `ips`.
pub fn generate(dns_names: &[String], ips: &[std::net::IpAddr], days: u32) -> Result<Generated> {
    let today = Timestamp::now().to_zoned(TimeZone::UTC).date();
    let day = |days: i64| ymd(today, days).map(|(y, m, d)| rcgen::date_time_ymd(y, m, d));
    let ca_key = KeyPair::generate().map_err(rcgen_error("generating the CA key"))?;
    let mut ca = CertificateParams::new(Vec::<String>::new())
        .map_err(rcgen_error("building the CA parameters"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "secret-injector webhook CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = day(-1)?;
    ca.not_after = day(2 * i64::from(days))?;
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(rcgen_error("self-signing the CA"))?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(rcgen_error("generating the serving key"))?;
    let mut params = CertificateParams::new(dns_names.to_vec()).map_err(rcgen_error(
        "building the serving certificate's parameters (DNS names)",
    ))?;
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        dns_names
            .first()
            .cloned()
            .unwrap_or_else(|| "secret-injector".into()),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = day(-1)?;
    params.not_after = day(i64::from(days))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rcgen_error("signing the serving certificate"))?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

pub fn run(args: &CertsArgs) -> Result<()> {
    let svc = &args.service;
    let ns = &args.namespace;
    let mut dns = vec![
        svc.clone(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
    ];
    dns.extend(args.extra_dns.iter().cloned());
    let generated = generate(&dns, &args.ips, args.days)?;

    std::fs::create_dir_all(&args.out_dir).map_err(io_error("creating", &args.out_dir))?;
    write(
        &args.out_dir.join("ca.crt"),
        generated.ca_pem.as_bytes(),
        0o644,
    )?;
    write(
        &args.out_dir.join("tls.crt"),
        generated.cert_pem.as_bytes(),
        0o644,
    )?;
    write(
        &args.out_dir.join("tls.key"),
        generated.key_pem.as_bytes(),
        0o600,
    )?;
    let hmac_path = args.out_dir.join("hmac.key");
    if !hmac_path.exists() {
        // Kept across certificate rotations so recorded digests stay comparable.
        let mut key = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut key);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        write(&hmac_path, hex.as_bytes(), 0o600)?;
    }
    let bundle = base64::engine::general_purpose::STANDARD.encode(generated.ca_pem.as_bytes());
    for path in &args.webhook_configs {
        let text = std::fs::read_to_string(path).map_err(io_error("reading", path))?;
        let (updated, count) = set_ca_bundle(&text, &bundle);
        if count == 0 {
            return Err(CertsError::NoCaBundle(path.clone()));
        }
        std::fs::write(path, updated).map_err(io_error("writing", path))?;
        eprintln!(
            "wrote caBundle into {} ({count} webhook(s))",
            path.display()
        );
    }
    eprintln!(
        "wrote ca.crt, tls.crt, tls.key and hmac.key to {}",
        args.out_dir.display()
    );
    Ok(())
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_error("writing", path))?;
    f.write_all(bytes).map_err(io_error("writing", path))?;
    Ok(())
}

/// Replace the value of every `caBundle:` line, keeping indentation and comments elsewhere.
pub fn set_ca_bundle(yaml: &str, bundle: &str) -> (String, usize) {
    let mut count = 0;
    let mut out = String::with_capacity(yaml.len() + bundle.len());
    for line in yaml.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("caBundle:") {
            let indent = &line[..line.len() - trimmed.len()];
            let newline = if rest.ends_with('\n') { "\n" } else { "" };
            out.push_str(&format!("{indent}caBundle: {bundle}{newline}"));
            count += 1;
        } else {
            out.push_str(line);
        }
    }
    (out, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundle_replacement_keeps_layout() {
        let yaml = "webhooks:\n  - name: a\n    clientConfig:\n      caBundle: \"\"\n      # keep me\n  - name: b\n    clientConfig:\n      caBundle: old\n";
        let (out, n) = set_ca_bundle(yaml, "NEW");
        assert_eq!(n, 2);
        assert!(out.contains("      caBundle: NEW\n      # keep me"));
        assert!(!out.contains("old"));
    }

    #[test]
    fn validity_is_built_from_calendar_days() {
        let today = Date::new(2024, 2, 28).unwrap();
        assert_eq!(ymd(today, 1).unwrap(), (2024, 2, 29));
        assert_eq!(ymd(today, -1).unwrap(), (2024, 2, 27));
        assert_eq!(ymd(today, 366).unwrap(), (2025, 2, 28));
        assert_eq!(ymd(today, 730).unwrap(), (2026, 2, 27));
        assert!(matches!(
            ymd(today, 10_000_000),
            Err(CertsError::Validity { .. })
        ));
    }

    #[test]
    fn generated_pair_loads_in_rustls() {
        let g = generate(&["svc.ns.svc".into()], &["127.0.0.1".parse().unwrap()], 1).unwrap();
        let certs: Vec<_> = rustls_pemfile::certs(&mut g.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), 1);
        assert!(rustls_pemfile::private_key(&mut g.key_pem.as_bytes())
            .unwrap()
            .is_some());
    }
}
