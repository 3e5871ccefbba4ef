//! Issuing a Secret's values — a dynamic secret or a certificate — as the pod's identity,
//! and the lease policy: when the refresher renews, re-issues and revokes.
//!
//! Timing (documented in docs/dynamic-secrets.md): the credentials' *lifetime* runs from
//! issue to their effective expiry, min(lease end, lease-holder token expiry). Each check is
//! due after [`CHECK_FRACTION`] of the time left (minus up to 5% jitter). At a check a
//! renewable lease is renewed for as long as Vault grants; when at most [`REISSUE_LEFT`] of the
//! lifetime is left afterwards (or the lease cannot be renewed) the credentials are re-issued.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rand::Rng;

use super::fetch::{FetchError, ReadFailure};
use crate::identity::PodIdentity;
use crate::managed::recorded::{after, between, LeaseHolder, LeaseRecord};
use crate::provider::issue::{IssueRequest, TokenHolder};
use crate::provider::{SecretProvider, SelectError};
use crate::redact::SecretBytes;
use crate::spec::{is_secret_key, DynamicMethod, SourceSpec};
use crate::store::ResolvedStore;

/// A check is due after this fraction of the time left.
pub const CHECK_FRACTION: f64 = 2.0 / 3.0;
/// Re-issue when at most this fraction of the lifetime is left.
pub const REISSUE_LEFT: f64 = 0.4;
/// Checks are never closer together than this.
const MIN_CHECK: Duration = Duration::from_secs(1);
/// An answer without a lease or an expiry is re-issued after this (or the holder's TTL).
const NO_LEASE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Freshly issued values and the lease recorded with them.
#[derive(Debug)]
pub struct Issuance {
    pub data: BTreeMap<String, SecretBytes>,
    pub lease: LeaseRecord,
}

/// The backend request a source's issuance makes.
pub fn request_of(source: &SourceSpec, holder_ttl: Duration) -> Option<IssueRequest> {
    if let Some(d) = &source.dynamic {
        return Some(IssueRequest {
            path: d.path.clone(),
            method: d.method,
            body: (!d.parameters.is_empty())
                .then(|| serde_json::to_string(&d.parameters).expect("parameters serialise")),
            holder_ttl,
        });
    }
    let c = source.certificate.as_ref()?;
    let mut body = serde_json::json!({ "common_name": c.common_name });
    if !c.alt_names.is_empty() {
        body["alt_names"] = c.alt_names.join(",").into();
    }
    if let Some(ttl) = &c.ttl {
        body["ttl"] = ttl.clone().into();
    }
    Some(IssueRequest {
        path: c.path.clone(),
        method: DynamicMethod::Post,
        body: Some(body.to_string()),
        holder_ttl,
    })
}

/// Issue `source` as `identity` and shape the answer into Secret data plus its lease record.
pub async fn issue(
    provider: &dyn SecretProvider,
    identity: &PodIdentity,
    store: &ResolvedStore,
    source: &SourceSpec,
    holder_ttl: Duration,
    rng: &mut (impl Rng + Send),
) -> Result<Issuance, FetchError> {
    let request = request_of(source, holder_ttl).expect("an issued source");
    let now = Timestamp::now();
    let issued = provider
        .issue(identity, store, &request)
        .await
        .map_err(|error| {
            FetchError::Read(Box::new(ReadFailure {
                store: store.reference.clone(),
                keys: request.path.clone(),
                identity: identity.clone(),
                error,
            }))
        })?;
    let context = |what: &str| format!("{}: {} ({what})", store.reference, request.path);
    let (data, expiration) = if source.certificate.is_some() {
        shape_certificate(issued.data, &context)?
    } else {
        (shape_dynamic(source, issued.data, &context)?, None)
    };
    let meta = IssuedMeta {
        lease_id: issued.lease_id,
        lease_duration: issued.lease_duration,
        renewable: issued.renewable,
        holder: issued.holder,
    };
    let lease = record(now, &meta, expiration, rng);
    Ok(Issuance { data, lease })
}

/// The non-secret part of an issuance's answer.
pub struct IssuedMeta {
    pub lease_id: String,
    pub lease_duration: Duration,
    pub renewable: bool,
    pub holder: TokenHolder,
}

/// The lease record of an issuance made at `now`.
pub fn record(
    now: Timestamp,
    meta: &IssuedMeta,
    expiration: Option<Timestamp>,
    rng: &mut impl Rng,
) -> LeaseRecord {
    let (holder, holder_ttl) = match meta.holder {
        TokenHolder::Orphan { ttl } => (LeaseHolder::OrphanToken, ttl),
        TokenHolder::Login { ttl } => (LeaseHolder::LoginToken, ttl),
    };
    // A certificate without a lease lives its own lifetime; no token holds it.
    let holder = if meta.lease_id.is_empty() && expiration.is_some() {
        LeaseHolder::None
    } else {
        holder
    };
    let holder_expires = match holder {
        LeaseHolder::None => None,
        _ => holder_ttl.map(|t| after(now, t)),
    };
    let ttl = match (expiration, meta.lease_duration) {
        (Some(end), d) if d.is_zero() || after(now, d) > end => between(now, end),
        (_, d) if !d.is_zero() => d,
        _ => holder_ttl
            .unwrap_or(NO_LEASE_LIFETIME)
            .min(NO_LEASE_LIFETIME),
    };
    let mut lease = LeaseRecord {
        id: meta.lease_id.clone(),
        issued: now,
        ttl,
        renewed: None,
        renewable: meta.renewable && !meta.lease_id.is_empty(),
        holder,
        holder_expires,
        next: now,
        retiring: Vec::new(),
    };
    lease.next = next_check(now, lease.expires(), rng);
    lease
}

/// When the next check is due: after [`CHECK_FRACTION`] of the time left, minus up to 5%.
pub fn next_check(now: Timestamp, expires: Timestamp, rng: &mut impl Rng) -> Timestamp {
    let left = between(now, expires);
    let wait = left.mul_f64(CHECK_FRACTION * (1.0 - rng.random_range(0.0..0.05)));
    after(now, wait.max(MIN_CHECK))
}

/// True when the credentials should be re-issued rather than kept (after any renewal).
pub fn should_reissue(lease: &LeaseRecord, now: Timestamp) -> bool {
    let left = between(now, lease.expires());
    left.as_secs_f64() <= lease.lifetime().as_secs_f64() * REISSUE_LEFT
}

/// A renewal granted `ttl` at `now`: the updated record (next check included).
pub fn renewed(
    lease: &LeaseRecord,
    now: Timestamp,
    ttl: Duration,
    renewable: bool,
    rng: &mut impl Rng,
) -> LeaseRecord {
    let mut out = lease.clone();
    out.renewed = Some(now);
    out.ttl = ttl;
    out.renewable = renewable;
    out.next = next_check(now, out.expires(), rng);
    out
}

/// How much to ask for when renewing: up to the holder's expiry (more would die with it).
pub fn renew_increment(lease: &LeaseRecord, now: Timestamp) -> Duration {
    match lease.holder_expires {
        Some(h) => between(now, h).max(Duration::from_secs(1)),
        None => Duration::from_secs(30 * 24 * 3600),
    }
}

/// The lease id must belong to the source's path (annotations can be edited by others).
pub fn lease_belongs(source: &SourceSpec, lease_id: &str) -> bool {
    let path = match (&source.dynamic, &source.certificate) {
        (Some(d), _) => &d.path,
        (_, Some(c)) => &c.path,
        _ => return false,
    };
    lease_id
        .strip_prefix(path.as_str())
        .is_some_and(|rest| rest.starts_with('/'))
}

fn shape_dynamic(
    source: &SourceSpec,
    mut fields: BTreeMap<String, SecretBytes>,
    context: &dyn Fn(&str) -> String,
) -> Result<BTreeMap<String, SecretBytes>, FetchError> {
    let keys = &source.dynamic.as_ref().expect("dynamic").keys;
    if keys.is_empty() {
        if let Some(bad) = fields.keys().find(|k| !is_secret_key(k)) {
            return Err(FetchError::Select {
                context: context("its fields become Secret keys"),
                error: SelectError::BadKey { field: bad.clone() },
            });
        }
        return Ok(fields);
    }
    let available: Vec<String> = fields.keys().cloned().collect();
    let mut out = BTreeMap::new();
    for (secret_key, field) in keys {
        let value = fields.remove(field).ok_or_else(|| FetchError::Select {
            context: context(&format!("for {secret_key}")),
            error: SelectError::PropertyMissing {
                property: field.clone(),
                available: available.clone(),
            },
        })?;
        out.insert(secret_key.clone(), value);
    }
    Ok(out)
}

type Shaped = (BTreeMap<String, SecretBytes>, Option<Timestamp>);

fn shape_certificate(
    mut fields: BTreeMap<String, SecretBytes>,
    context: &dyn Fn(&str) -> String,
) -> Result<Shaped, FetchError> {
    let available: Vec<String> = fields.keys().cloned().collect();
    let mut take = |field: &str, key: &str| {
        fields.remove(field).ok_or_else(|| FetchError::Select {
            context: context(&format!("for {key}")),
            error: SelectError::PropertyMissing {
                property: field.to_string(),
                available: available.clone(),
            },
        })
    };
    let crt = take("certificate", "tls.crt")?;
    let key = take("private_key", "tls.key")?;
    let ca = take("issuing_ca", "ca.crt")?;
    let expiration = fields
        .get("expiration")
        .and_then(|v| v.expose_str())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| Timestamp::from_second(s).ok());
    let data = BTreeMap::from([
        ("tls.crt".to_string(), crt),
        ("tls.key".to_string(), key),
        ("ca.crt".to_string(), ca),
    ]);
    Ok((data, expiration))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn meta(ttl: u64, renewable: bool, holder: Option<u64>) -> IssuedMeta {
        IssuedMeta {
            lease_id: "database/creds/app/x".into(),
            lease_duration: Duration::from_secs(ttl),
            renewable,
            holder: TokenHolder::Orphan {
                ttl: holder.map(Duration::from_secs),
            },
        }
    }

    #[test]
    fn renewable_leases_are_renewed_then_reissued_in_the_last_part_of_their_life() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        // default_ttl 10s, max_ttl 30s, holder 1h.
        let lease = record(t0, &meta(10, true, Some(3600)), None, &mut rng);
        let first = between(t0, lease.next).as_secs_f64();
        assert!((6.0..=6.7).contains(&first), "{first}");
        // Renewed at the check, Vault grants up to max_ttl (30s from issue).
        let now = lease.next;
        let r = renewed(
            &lease,
            now,
            between(now, after(t0, Duration::from_secs(30))),
            true,
            &mut rng,
        );
        assert!(!should_reissue(&r, now));
        // At the following check the lease is capped: re-issue.
        let now = r.next;
        let capped = renewed(
            &r,
            now,
            between(now, after(t0, Duration::from_secs(30))),
            true,
            &mut rng,
        );
        assert!(should_reissue(&capped, now));
        let at = between(t0, now).as_secs_f64();
        assert!((20.0..=25.0).contains(&at), "re-issued at {at}s of 30s");
    }

    #[test]
    fn the_holder_token_caps_the_lifetime() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let lease = record(t0, &meta(3600, false, Some(60)), None, &mut rng);
        assert_eq!(lease.expires(), after(t0, Duration::from_secs(60)));
        assert!(should_reissue(&lease, lease.next));
        assert_eq!(renew_increment(&lease, t0), Duration::from_secs(60));
    }

    #[test]
    fn certificates_live_their_own_lifetime() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let m = IssuedMeta {
            lease_id: String::new(),
            lease_duration: Duration::ZERO,
            renewable: false,
            holder: TokenHolder::Orphan {
                ttl: Some(Duration::from_secs(60)),
            },
        };
        let end = after(t0, Duration::from_secs(7200));
        let lease = record(t0, &m, Some(end), &mut rng);
        assert_eq!(lease.holder, LeaseHolder::None);
        assert_eq!(lease.expires(), end);
    }

    #[test]
    fn lease_ids_must_belong_to_the_source() {
        let source: SourceSpec = serde_json::from_value(serde_json::json!({
            "storeRef": {"kind": "SecretStore", "name": "v"},
            "dynamic": {"path": "database/creds/app"}
        }))
        .unwrap();
        assert!(lease_belongs(&source, "database/creds/app/abc"));
        assert!(!lease_belongs(&source, "database/creds/app2/abc"));
        assert!(!lease_belongs(&source, "database/creds/other/abc"));
    }
}
