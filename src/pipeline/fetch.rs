//! Reading remote keys and assembling Secret data from them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::FetchCache;
use crate::identity::PodIdentity;
use crate::provider::{self, ProviderError, RemoteKey, RemoteSecret, SecretProvider, SelectError};
use crate::redact::SecretBytes;
use crate::spec::{SourceSpec, StoreRef};
use crate::store::ResolvedStore;

/// Why a source's data could not be produced.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Read(Box<ReadFailure>),
    /// `context` names the store, the remote key and the Secret key being produced.
    #[error("{context}: {error}")]
    Select { context: String, error: SelectError },
    #[error(
        "{origin}: Secret key {key:?} is produced twice (by {first} and by {second}); rename one"
    )]
    DuplicateKey {
        origin: String,
        key: String,
        first: String,
        second: String,
    },
    #[error(
        "{origin}: the values add up to {bytes} bytes, over the 1 MiB limit of a Kubernetes Secret"
    )]
    TooLarge { origin: String, bytes: usize },
}

impl FetchError {
    /// True when the backend read failed (as opposed to the values not fitting the request).
    pub fn is_read(&self) -> bool {
        matches!(self, FetchError::Read(_))
    }
}

/// A backend read that failed, with what it was for.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{store}: fetching {keys} as {identity} failed: {error}")]
pub struct ReadFailure {
    pub store: StoreRef,
    pub keys: String,
    pub identity: PodIdentity,
    pub error: ProviderError,
}

/// Kubernetes refuses Secrets larger than this.
const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// The distinct remote keys a source reads.
pub fn keys_of(source: &SourceSpec) -> BTreeSet<RemoteKey> {
    source
        .data
        .iter()
        .map(|d| RemoteKey::from(&d.remote_ref))
        .chain(source.extract.iter().map(RemoteKey::from))
        .collect()
}

/// The fetched documents, by key.
pub type Documents = BTreeMap<RemoteKey, RemoteSecret>;

/// Read `keys` from `store` as `identity` in one provider call (so an AWS store batches them).
/// `coalesce`: share reads with concurrent admissions of the same identity (admission path);
/// the refresher passes None and reads fresh.
pub async fn fetch_documents(
    provider: &dyn SecretProvider,
    coalesce: Option<&FetchCache>,
    identity: &PodIdentity,
    store: &ResolvedStore,
    keys: &BTreeSet<RemoteKey>,
) -> Result<Documents, FetchError> {
    let keys: Vec<RemoteKey> = keys.iter().cloned().collect();
    let fetched = match coalesce {
        Some(cache) => cache.fetch(provider, identity, store, &keys).await,
        None => provider.fetch(identity, store, &keys).await.map(Arc::new),
    };
    let documents: Arc<Vec<RemoteSecret>> = fetched.map_err(|e| {
        FetchError::Read(Box::new(ReadFailure {
            store: store.reference.clone(),
            keys: match e.key {
                Some(k) => k,
                None => keys
                    .iter()
                    .map(|k| k.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            identity: identity.clone(),
            error: e.error,
        }))
    })?;
    Ok(keys.into_iter().zip(documents.iter().cloned()).collect())
}

/// Read everything one source needs, fresh, and assemble its Secret data (the refresher's path).
pub async fn fetch_source(
    provider: &dyn SecretProvider,
    identity: &PodIdentity,
    store: &ResolvedStore,
    source: &SourceSpec,
    origin: &str,
) -> Result<BTreeMap<String, SecretBytes>, FetchError> {
    let documents = fetch_documents(provider, None, identity, store, &keys_of(source)).await?;
    assemble(store, source, origin, &documents)
}

/// Select properties and extract fields from fetched documents into Secret data.
pub fn assemble(
    store: &ResolvedStore,
    source: &SourceSpec,
    origin: &str,
    documents: &Documents,
) -> Result<BTreeMap<String, SecretBytes>, FetchError> {
    let mut data: BTreeMap<String, SecretBytes> = BTreeMap::new();
    let mut produced_by: BTreeMap<String, String> = BTreeMap::new();
    let mut insert = |key: String, value: SecretBytes, source: String| -> Result<(), FetchError> {
        if let Some(first) = produced_by.get(&key) {
            return Err(FetchError::DuplicateKey {
                origin: origin.to_string(),
                key,
                first: first.clone(),
                second: source,
            });
        }
        produced_by.insert(key.clone(), source);
        data.insert(key, value);
        Ok(())
    };
    for d in &source.data {
        let doc = &documents[&RemoteKey::from(&d.remote_ref)];
        let value = provider::select(doc, d.remote_ref.property.as_deref()).map_err(|error| {
            FetchError::Select {
                context: format!(
                    "{}: {} (for {})",
                    store.reference, d.remote_ref.key, d.secret_key
                ),
                error,
            }
        })?;
        insert(d.secret_key.clone(), value, format!("{}", d.remote_ref))?;
    }
    for r in &source.extract {
        let doc = &documents[&RemoteKey::from(r)];
        let fields = provider::extract(doc).map_err(|error| FetchError::Select {
            context: format!("{}: {} (for extract)", store.reference, r.key),
            error,
        })?;
        for (k, v) in fields {
            insert(k, v, format!("extract of {}", r.key))?;
        }
    }
    let bytes: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_SECRET_BYTES {
        return Err(FetchError::TooLarge {
            origin: origin.to_string(),
            bytes,
        });
    }
    Ok(data)
}
