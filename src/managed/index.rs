//! One watch of the managed Secrets (label-selected, metadata only, managedFields dropped),
//! kept on every replica as part of the [`crate::index::Index`]. It answers warm admissions from memory and feeds the refresher's
//! work list, so there is a single watch for both.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::{broadcast, watch};
use tracing::warn;

use super::recorded::SELECTOR;

pub type SecretMeta = PartialObjectMeta<Secret>;
pub type SecretEvent = Event<SecretMeta>;

/// Events a slow subscriber may fall behind by before it is re-sent a snapshot.
const BUFFER: usize = 1024;

/// The watch-fed index of managed Secrets. The watch stops when the index is dropped.
pub struct ManagedIndex {
    store: Store<SecretMeta>,
    /// True once the first list has been applied. (Not `Store::wait_until_ready`: its
    /// one-shot keeps a single waker, so a second concurrent waiter may never wake.)
    synced: watch::Receiver<bool>,
    events: broadcast::Sender<SecretEvent>,
    task: tokio::task::AbortHandle,
}

impl Drop for ManagedIndex {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ManagedIndex {
    /// Start watching. Needs a Tokio runtime.
    pub fn watch(client: Client) -> Self {
        let (store, mut writer) = reflector::store();
        let (events, _) = broadcast::channel(BUFFER);
        let (synced_tx, synced) = watch::channel(false);
        let sender = events.clone();
        let api = Api::<SecretMeta>::all(client);
        let stream = watcher::watcher(api, watcher::Config::default().labels(SELECTOR))
            .default_backoff()
            .modify(|o| o.metadata.managed_fields = None);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        writer.apply_watcher_event(&event);
                        if matches!(event, Event::InitDone) {
                            synced_tx.send_replace(true);
                        }
                        // No subscriber (not leading) is fine.
                        let _ = sender.send(event);
                    }
                    Err(e) => warn!(error = %e, "managed Secret watch error; retrying"),
                }
            }
        })
        .abort_handle();
        Self {
            store,
            synced,
            events,
            task,
        }
    }

    /// The indexed metadata of one Secret.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<SecretMeta>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// Managed Secrets indexed.
    pub fn len(&self) -> usize {
        self.store.state().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the first list has been applied.
    pub async fn wait_until_synced(&self) {
        let _ = self.synced.clone().wait_for(|synced| *synced).await;
    }

    /// The watch's events, starting with a snapshot (`Init`, `InitApply`…, `InitDone`) once
    /// synced; a subscriber that falls behind gets a fresh snapshot.
    pub fn events(&self) -> BoxStream<'static, SecretEvent> {
        struct State {
            rx: broadcast::Receiver<SecretEvent>,
            store: Store<SecretMeta>,
            synced: watch::Receiver<bool>,
            queued: VecDeque<SecretEvent>,
            snapshot: bool,
        }
        let state = State {
            // Subscribed before the snapshot is taken: replaying the events after it in order
            // ends in the latest state.
            rx: self.events.subscribe(),
            store: self.store.clone(),
            synced: self.synced.clone(),
            queued: VecDeque::new(),
            snapshot: true,
        };
        futures::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(event) = st.queued.pop_front() {
                    return Some((event, st));
                }
                if std::mem::take(&mut st.snapshot) {
                    st.synced.wait_for(|synced| *synced).await.ok()?;
                    st.queued.push_back(Event::Init);
                    st.queued.extend(
                        st.store
                            .state()
                            .into_iter()
                            .map(|o| Event::InitApply((*o).clone())),
                    );
                    st.queued.push_back(Event::InitDone);
                    continue;
                }
                match st.rx.recv().await {
                    Ok(event) => return Some((event, st)),
                    Err(broadcast::error::RecvError::Lagged(_)) => st.snapshot = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}
