//! A watch-fed map of one resource kind, each object reduced to what the code reads (`V`)
//! before it is stored. The building block of [`super::Index`]: one list-then-watch per kind
//! (kube's `watcher`, with backoff), a `synced` flag for readiness, and a change counter so a
//! caller can wait briefly for an object the watch has not delivered yet.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::warn;

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type ObjKey = (Box<str>, Box<str>);

pub fn key(namespace: &str, name: &str) -> ObjKey {
    (namespace.into(), name.into())
}

struct Inner<V> {
    map: RwLock<HashMap<ObjKey, Arc<V>>>,
    synced: watch::Sender<bool>,
    /// Bumped after every applied event: waiters re-check on change.
    version: watch::Sender<u64>,
    /// The resource is not served (CRDs not installed): synced and empty.
    missing: std::sync::atomic::AtomicBool,
}

/// The watch stops when this is dropped.
pub struct Watched<V> {
    inner: Arc<Inner<V>>,
    task: tokio::task::AbortHandle,
}

impl<V> Drop for Watched<V> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<V: Send + Sync + 'static> Watched<V> {
    /// Start the watch. `convert` reduces each object to what is kept (None: not kept).
    /// With `tolerate_missing`, a 404 on the first list (the resource is not served) counts as
    /// synced and empty, so readiness does not wait for CRDs that are not installed.
    pub fn spawn<K, F>(
        api: Api<K>,
        config: watcher::Config,
        what: &'static str,
        tolerate_missing: bool,
        convert: F,
    ) -> Self
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        K::DynamicType: Default,
        F: Fn(&K) -> Option<V> + Send + 'static,
    {
        let (synced, _) = watch::channel(false);
        let (version, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            map: RwLock::new(HashMap::new()),
            synced,
            version,
            missing: false.into(),
        });
        let state = inner.clone();
        let stream = watcher::watcher(api, config).default_backoff();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            // Objects of a (re)list, swapped in whole at InitDone.
            let mut relist: Option<HashMap<ObjKey, Arc<V>>> = None;
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))
                        if tolerate_missing && s.code == 404 =>
                    {
                        if !state
                            .missing
                            .swap(true, std::sync::atomic::Ordering::Relaxed)
                        {
                            warn!(
                                what,
                                "resource not served (CRDs not installed?); treated as empty"
                            );
                        }
                        state.synced.send_replace(true);
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        continue;
                    }
                    Err(e) => {
                        warn!(what, error = %e, "watch error; retrying");
                        continue;
                    }
                };
                match event {
                    Event::Init => relist = Some(HashMap::new()),
                    Event::InitApply(o) => {
                        if let (Some(map), Some(v)) = (relist.as_mut(), convert(&o)) {
                            map.insert(object_key(&o), Arc::new(v));
                        }
                    }
                    Event::InitDone => {
                        if let Some(map) = relist.take() {
                            *state.map.write().expect("index lock") = map;
                        }
                        state
                            .missing
                            .store(false, std::sync::atomic::Ordering::Relaxed);
                        state.synced.send_replace(true);
                    }
                    Event::Apply(o) => {
                        let k = object_key(&o);
                        let mut map = state.map.write().expect("index lock");
                        match convert(&o) {
                            Some(v) => map.insert(k, Arc::new(v)),
                            None => map.remove(&k),
                        };
                    }
                    Event::Delete(o) => {
                        state
                            .map
                            .write()
                            .expect("index lock")
                            .remove(&object_key(&o));
                    }
                }
                state.version.send_modify(|v| *v = v.wrapping_add(1));
            }
        })
        .abort_handle();
        Self { inner, task }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<V>> {
        self.inner
            .map
            .read()
            .expect("index lock")
            .get(&key(namespace, name))
            .cloned()
    }

    /// Every object, as of now.
    pub fn entries(&self) -> Vec<(ObjKey, Arc<V>)> {
        self.inner
            .map
            .read()
            .expect("index lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.map.read().expect("index lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The resource is not served (e.g. the CRDs are not installed).
    pub fn is_missing(&self) -> bool {
        self.inner
            .missing
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    pub async fn wait_until_synced(&self) {
        let _ = self.inner.synced.subscribe().wait_for(|s| *s).await;
    }

    /// A receiver that changes whenever the map does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }
}

fn object_key<K: Resource>(o: &K) -> ObjKey {
    key(&o.namespace().unwrap_or_default(), &o.name_any())
}
