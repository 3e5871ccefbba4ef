//! Identity-keyed, single-flight fetch cache: concurrent admissions that need the same keys
//! from the same store as the same identity share one backend read. Entries live only a few
//! seconds — long enough to absorb a burst of pods from one rollout, short enough that a
//! rotation is picked up by the next cold admission. One identity's entry never serves another.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::identity::PodIdentity;
use crate::provider::{KeyedError, RemoteKey, RemoteSecret, SecretProvider};
use crate::spec::StoreRef;
use crate::store::{ProviderConfig, ResolvedStore};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FetchKey {
    identity: PodIdentity,
    store: StoreRef,
    config: ProviderConfig,
    keys: Vec<RemoteKey>,
}

#[derive(Clone)]
pub struct FetchCache {
    entries: Cache<FetchKey, Arc<Vec<RemoteSecret>>>,
}

impl FetchCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    pub async fn fetch(
        &self,
        provider: &dyn SecretProvider,
        identity: &PodIdentity,
        store: &ResolvedStore,
        keys: &[RemoteKey],
    ) -> Result<Arc<Vec<RemoteSecret>>, KeyedError> {
        let key = FetchKey {
            identity: identity.clone(),
            store: store.reference.clone(),
            config: store.config.clone(),
            keys: keys.to_vec(),
        };
        // Errors are shared with the waiters of this flight but never cached.
        self.entries
            .try_get_with(key, async {
                provider.fetch(identity, store, keys).await.map(Arc::new)
            })
            .await
            .map_err(|e: Arc<KeyedError>| (*e).clone())
    }
}
