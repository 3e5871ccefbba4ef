//! The fetch stage, shared by admission and the refresher: read every remote key a source
//! needs as the pod's identity, then select properties and extract fields into Secret data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::admission::error::{FetchFailure, InjectError};
use crate::admission::Injector;
use crate::identity::PodIdentity;
use crate::provider::{self, RemoteKey, RemoteSecret};
use crate::redact::SecretBytes;
use crate::spec::SourceSpec;
use crate::store::ResolvedStore;

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
/// the refresher reads fresh.
pub async fn fetch_documents(
    injector: &Injector,
    identity: &PodIdentity,
    store: &ResolvedStore,
    keys: &BTreeSet<RemoteKey>,
    coalesce: bool,
) -> Result<Documents, InjectError> {
    let keys: Vec<RemoteKey> = keys.iter().cloned().collect();
    let provider = injector.provider_for(store);
    let fetched = if coalesce {
        injector
            .fetch_cache
            .fetch(provider.as_ref(), identity, store, &keys)
            .await
    } else {
        provider.fetch(identity, store, &keys).await.map(Arc::new)
    };
    let documents: Arc<Vec<RemoteSecret>> = fetched.map_err(|e| {
        InjectError::Fetch(Box::new(FetchFailure {
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

/// Read everything one source needs and assemble its Secret data (the refresher's path).
pub async fn fetch_source(
    injector: &Injector,
    identity: &PodIdentity,
    store: &ResolvedStore,
    source: &SourceSpec,
    origin: &str,
    coalesce: bool,
) -> Result<BTreeMap<String, SecretBytes>, InjectError> {
    let documents = fetch_documents(injector, identity, store, &keys_of(source), coalesce).await?;
    assemble(store, source, origin, &documents)
}

/// Select properties and extract fields from fetched documents into Secret data.
pub fn assemble(
    store: &ResolvedStore,
    source: &SourceSpec,
    origin: &str,
    documents: &Documents,
) -> Result<BTreeMap<String, SecretBytes>, InjectError> {
    let mut data: BTreeMap<String, SecretBytes> = BTreeMap::new();
    let mut produced_by: BTreeMap<String, String> = BTreeMap::new();
    let mut insert = |key: String, value: SecretBytes, source: String| -> Result<(), InjectError> {
        if let Some(first) = produced_by.get(&key) {
            return Err(InjectError::DuplicateKey {
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
            InjectError::Select {
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
        let fields = provider::extract(doc).map_err(|error| InjectError::Select {
            context: format!("{}: {} (for extract)", store.reference, r.key),
            error,
        })?;
        for (k, v) in fields {
            insert(k, v, format!("extract of {}", r.key))?;
        }
    }
    let bytes: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_SECRET_BYTES {
        return Err(InjectError::TooLarge {
            origin: origin.to_string(),
            bytes,
        });
    }
    Ok(data)
}
