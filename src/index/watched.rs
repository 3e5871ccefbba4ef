//! A watch-fed map of one resource kind, each object reduced to what the code reads (`V`)
//! before it is stored. The building block of [`super::Index`]: one list-then-watch per kind
//! (kube's `watcher`, with backoff), a `synced` flag for readiness, a change counter so a
//! caller can wait briefly for an object the watch has not delivered yet, and — for a
//! consumer that keeps its own work list (the refresher) — the changes as a stream.
//!
//! Memory: objects are kept per namespace (the namespace's name is stored once, and shared by
//! every key of it), a record is held once and handed out as an `Arc`, and a lookup
//! allocates nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tracing::warn;

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects. Both are shared
/// with the map: a clone allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// A change to the map, as a subscriber of [`Watched::events`] sees it.
#[derive(Debug)]
pub enum Change<V> {
    /// A (re)list begins: what follows up to [`Change::Listed`] is the whole map.
    Relist,
    /// An object kept (listed, added or modified).
    Applied(ObjKey, Arc<V>),
    /// An object gone (deleted, or no longer kept).
    Removed(ObjKey),
    /// The (re)list is complete: an object not applied since [`Change::Relist`] is gone.
    Listed,
}

impl<V> Clone for Change<V> {
    fn clone(&self) -> Self {
        match self {
            Change::Relist => Change::Relist,
            Change::Applied(k, v) => Change::Applied(k.clone(), v.clone()),
            Change::Removed(k) => Change::Removed(k.clone()),
            Change::Listed => Change::Listed,
        }
    }
}

/// namespace → name → record.
type Map<V> = HashMap<Arc<str>, HashMap<Arc<str>, Arc<V>>>;

struct Inner<V> {
    map: RwLock<Map<V>>,
    synced: watch::Sender<bool>,
    /// Bumped after every applied event: waiters re-check on change.
    version: watch::Sender<u64>,
    /// The resource is not served (CRDs not installed): synced and empty.
    missing: std::sync::atomic::AtomicBool,
    /// Changes for subscribers; only for a map spawned with events.
    events: Option<broadcast::Sender<Change<V>>>,
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
        Self::start(api, config, what, tolerate_missing, None, move |o, _| {
            convert(o)
        })
    }

    /// As [`Watched::spawn`], for a map whose changes are also streamed ([`Watched::events`]);
    /// a subscriber may fall behind by `buffer` changes before it is re-sent a snapshot.
    /// `convert` is also handed the object's namespace, shared with the map's keys.
    pub fn spawn_with_events<K, F>(
        api: Api<K>,
        config: watcher::Config,
        what: &'static str,
        buffer: usize,
        convert: F,
    ) -> Self
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        K::DynamicType: Default,
        F: Fn(&K, &Arc<str>) -> Option<V> + Send + 'static,
    {
        let (events, _) = broadcast::channel(buffer);
        Self::start(api, config, what, false, Some(events), convert)
    }

    fn start<K, F>(
        api: Api<K>,
        config: watcher::Config,
        what: &'static str,
        tolerate_missing: bool,
        events: Option<broadcast::Sender<Change<V>>>,
        convert: F,
    ) -> Self
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        K::DynamicType: Default,
        F: Fn(&K, &Arc<str>) -> Option<V> + Send + 'static,
    {
        let (synced, _) = watch::channel(false);
        let (version, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            map: RwLock::new(HashMap::new()),
            synced,
            version,
            missing: false.into(),
            events,
        });
        let state = inner.clone();
        let stream = watcher::watcher(api, config).default_backoff();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            // Objects of a (re)list, swapped in whole at InitDone.
            let mut relist: Option<Map<V>> = None;
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
                let change = match event {
                    Event::Init => {
                        relist = Some(HashMap::new());
                        Some(Change::Relist)
                    }
                    Event::InitApply(o) => relist
                        .as_mut()
                        .and_then(|map| insert(map, &o, &convert))
                        .map(|(key, v)| Change::Applied(key, v)),
                    Event::InitDone => {
                        if let Some(map) = relist.take() {
                            *state.map.write().expect("index lock") = map;
                        }
                        state
                            .missing
                            .store(false, std::sync::atomic::Ordering::Relaxed);
                        state.synced.send_replace(true);
                        Some(Change::Listed)
                    }
                    Event::Apply(o) => {
                        let mut map = state.map.write().expect("index lock");
                        match insert(&mut map, &o, &convert) {
                            Some((key, v)) => Some(Change::Applied(key, v)),
                            None => remove(&mut map, &o).map(Change::Removed),
                        }
                    }
                    Event::Delete(o) => {
                        remove(&mut state.map.write().expect("index lock"), &o).map(Change::Removed)
                    }
                };
                state.version.send_modify(|v| *v = v.wrapping_add(1));
                // After the map: a subscriber's snapshot is never older than what it is sent.
                // No subscriber (e.g. not leading) is fine.
                if let (Some(events), Some(change)) = (&state.events, change) {
                    let _ = events.send(change);
                }
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
            .get(namespace)?
            .get(name)
            .cloned()
    }

    /// Every object, as of now.
    pub fn entries(&self) -> Vec<(ObjKey, Arc<V>)> {
        let map = self.inner.map.read().expect("index lock");
        map.iter()
            .flat_map(|(namespace, objects)| {
                objects.iter().map(|(name, v)| {
                    let key = ObjKey {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    };
                    (key, v.clone())
                })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        let map = self.inner.map.read().expect("index lock");
        map.values().map(HashMap::len).sum()
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

    /// The map's changes, starting with a snapshot (`Relist`, `Applied`…, `Listed`) once
    /// synced; a subscriber that falls behind gets a fresh snapshot. Empty for a map spawned
    /// without events.
    pub fn events(&self) -> BoxStream<'static, Change<V>> {
        let Some(events) = &self.inner.events else {
            return futures::stream::empty().boxed();
        };
        struct State<V> {
            rx: broadcast::Receiver<Change<V>>,
            inner: Arc<Inner<V>>,
            queued: VecDeque<Change<V>>,
            snapshot: bool,
        }
        let state = State {
            // Subscribed before the snapshot is taken: replaying the changes after it in order
            // ends in the latest state.
            rx: events.subscribe(),
            inner: self.inner.clone(),
            queued: VecDeque::new(),
            snapshot: true,
        };
        futures::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(change) = st.queued.pop_front() {
                    return Some((change, st));
                }
                if std::mem::take(&mut st.snapshot) {
                    st.inner
                        .synced
                        .subscribe()
                        .wait_for(|synced| *synced)
                        .await
                        .ok()?;
                    // Handles only (a key and a record are shared, not copied); the queue's
                    // room goes with the snapshot.
                    let mut snapshot = VecDeque::new();
                    snapshot.push_back(Change::Relist);
                    {
                        let map = st.inner.map.read().expect("index lock");
                        snapshot.reserve(map.values().map(HashMap::len).sum());
                        for (namespace, objects) in map.iter() {
                            for (name, v) in objects {
                                let key = ObjKey {
                                    namespace: namespace.clone(),
                                    name: name.clone(),
                                };
                                snapshot.push_back(Change::Applied(key, v.clone()));
                            }
                        }
                    }
                    snapshot.push_back(Change::Listed);
                    st.queued = snapshot;
                    continue;
                }
                st.queued = VecDeque::new();
                match st.rx.recv().await {
                    Ok(change) => return Some((change, st)),
                    Err(broadcast::error::RecvError::Lagged(_)) => st.snapshot = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

/// Keep `o` as `convert` reduces it, if it does; the namespace's name is shared with its other
/// keys.
fn insert<K: Resource, V>(
    map: &mut Map<V>,
    o: &K,
    convert: &impl Fn(&K, &Arc<str>) -> Option<V>,
) -> Option<(ObjKey, Arc<V>)> {
    let namespace = o.namespace().unwrap_or_default();
    let namespace = match map.get_key_value(namespace.as_str()) {
        Some((shared, _)) => shared.clone(),
        None => Arc::from(namespace),
    };
    let v = Arc::new(convert(o, &namespace)?);
    let objects = map.entry(namespace.clone()).or_default();
    let name = o.name_any();
    let name = match objects.get_key_value(name.as_str()) {
        Some((shared, _)) => shared.clone(),
        None => Arc::from(name),
    };
    objects.insert(name.clone(), v.clone());
    Some((ObjKey { namespace, name }, v))
}

/// Remove `o`'s record, if it was kept; the namespace goes with its last object.
fn remove<K: Resource, V>(map: &mut Map<V>, o: &K) -> Option<ObjKey> {
    let namespace = o.namespace().unwrap_or_default();
    let objects = map.get_mut(namespace.as_str())?;
    let (name, _) = objects.remove_entry(o.name_any().as_str())?;
    if objects.is_empty() {
        map.remove(namespace.as_str());
    }
    let namespace = Arc::from(namespace);
    Some(ObjKey { namespace, name })
}
