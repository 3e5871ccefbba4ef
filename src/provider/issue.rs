//! Issuing lease-bearing secrets (dynamic secrets, certificates) and managing their leases:
//! the request and answer types every backend speaks. Only Vault implements them; the
//! others answer [`unsupported`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::ProviderError;
use crate::redact::SecretBytes;
use crate::spec::DynamicMethod;

/// One issuance: a call to `path` whose answer carries the values and, usually, a lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IssueRequest {
    /// Full backend path (`database/creds/payments-rw`, `pki/issue/web`).
    pub path: String,
    pub method: DynamicMethod,
    /// JSON request body (POST/PUT), serialised.
    pub body: Option<String>,
    /// TTL asked for the lease-holder token the credentials are issued with.
    pub holder_ttl: Duration,
}

/// Which token the lease hangs off (a lease is revoked with the token that created it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenHolder {
    /// An orphan token minted for this issuance, valid `ttl` from issue (None: no expiry),
    /// then dropped.
    Orphan { ttl: Option<Duration> },
    /// The login token itself (minting an orphan was refused); `ttl`: its remaining life,
    /// None when it does not expire.
    Login { ttl: Option<Duration> },
}

/// What an issuance produced. The values are secret; the rest is not.
#[derive(Debug)]
pub struct Issued {
    /// The answer's `data` fields (strings as-is, anything else as JSON).
    pub data: BTreeMap<String, SecretBytes>,
    /// Empty when the answer had no lease.
    pub lease_id: String,
    pub lease_duration: Duration,
    pub renewable: bool,
    pub holder: TokenHolder,
}

/// The answer to a lease renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewed {
    /// TTL granted from now (the backend caps the increment at the lease's max TTL).
    pub ttl: Duration,
    pub renewable: bool,
}

/// Issuing from a backend that has no dynamic secrets.
pub fn unsupported(backend: &str) -> ProviderError {
    ProviderError::InvalidRequest(format!(
        "dynamic secrets and certificates are issued by Vault/OpenBao stores only; this is a \
         {backend} store"
    ))
}
