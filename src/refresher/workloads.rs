//! What the refresher remembers about workloads: the last `force-sync` annotation of each
//! Deployment, StatefulSet and DaemonSet that owns a managed Secret it tracks — and nothing
//! about any other workload. The watches see every workload of those kinds (an annotation
//! cannot be selected on); events for workloads that own no tracked Secret are dropped without
//! a trace, an owner is forgotten when its last Secret is, and a deleted workload's baseline
//! is dropped. So the map is bounded by the managed Secrets, not by the cluster's workloads.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;

use crate::k8s::{MetaEvent, Owner, OwnerKind, WorkloadKind};
use crate::managed::recorded;

/// One workload watch event, reduced to what the refresher needs.
pub(super) enum WorkloadEvent {
    Seen {
        key: Owner,
        force_sync: Option<String>,
        /// Part of a (re)list: a value set long ago, not a request witnessed now.
        initial: bool,
    },
    Deleted {
        key: Owner,
    },
}

#[derive(Debug, Default)]
struct Tracked {
    /// Managed Secrets (in the work list) this workload owns; the entry goes at 0.
    secrets: usize,
    /// The last force-sync seen; None until the first event after tracking began.
    force_sync: Option<Option<String>>,
}

/// Owners of tracked managed Secrets (keyed without uid, as rollouts are). Each is held once,
/// shared with the work list's entries of its Secrets.
#[derive(Debug, Default)]
pub(super) struct Workloads {
    owners: HashMap<Arc<Owner>, Tracked>,
}

impl Workloads {
    /// A tracked managed Secret of `owner` appeared; the owner as held here.
    pub(super) fn secret_added(&mut self, owner: Owner) -> Arc<Owner> {
        let shared = match self.owners.get_key_value(&owner) {
            Some((shared, _)) => shared.clone(),
            None => Arc::new(owner),
        };
        self.owners.entry(shared.clone()).or_default().secrets += 1;
        shared
    }

    /// A tracked managed Secret of `owner` left the work list.
    pub(super) fn secret_removed(&mut self, owner: &Owner) {
        if let Some(t) = self.owners.get_mut(owner) {
            t.secrets = t.secrets.saturating_sub(1);
            if t.secrets == 0 {
                self.owners.remove(owner);
            }
        }
    }

    /// A workload event. Returns the owner whose Secrets must be refreshed now, when the
    /// event is a force-sync request witnessed live on a workload we track.
    pub(super) fn on_event(&mut self, event: WorkloadEvent) -> Option<Owner> {
        match event {
            WorkloadEvent::Seen {
                key,
                force_sync,
                initial,
            } => {
                // Not an owner of a tracked Secret: remember nothing.
                let tracked = self.owners.get_mut(&key)?;
                let previous = tracked.force_sync.replace(force_sync.clone());
                let changed = match previous {
                    Some(prev) => prev != force_sync && force_sync.is_some(),
                    // First sight: only a change we witnessed counts, not a value set long ago.
                    None => false,
                };
                (changed && !initial).then_some(key)
            }
            WorkloadEvent::Deleted { key } => {
                // A workload re-created under the same name starts from a fresh baseline; its
                // Secrets leave with the garbage collector, and the entry with them.
                if let Some(t) = self.owners.get_mut(&key) {
                    t.force_sync = None;
                }
                None
            }
        }
    }

    /// Workloads remembered.
    pub(super) fn len(&self) -> usize {
        self.owners.len()
    }
}

/// Metadata-only watch of one workload kind, reduced to its force-sync annotation.
pub(super) fn stream(
    kind: WorkloadKind,
    client: &kube::Client,
) -> futures::stream::BoxStream<'static, WorkloadEvent> {
    let key = move |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| Owner {
        namespace: meta.namespace.clone().unwrap_or_default(),
        kind: OwnerKind::Known(kind),
        name: meta.name.clone().unwrap_or_default(),
        uid: None,
    };
    kind.watch_metadata(client)
        .map(move |event| match event {
            MetaEvent::Applied { meta, initial } => WorkloadEvent::Seen {
                key: key(&meta),
                force_sync: recorded::force_sync(&meta),
                initial,
            },
            MetaEvent::Deleted(meta) => WorkloadEvent::Deleted { key: key(&meta) },
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(ns: &str, name: &str) -> Owner {
        Owner {
            namespace: ns.into(),
            kind: OwnerKind::Known(WorkloadKind::Deployment),
            name: name.into(),
            uid: None,
        }
    }

    fn seen(key: Owner, force_sync: Option<&str>, initial: bool) -> WorkloadEvent {
        WorkloadEvent::Seen {
            key,
            force_sync: force_sync.map(str::to_string),
            initial,
        }
    }

    #[test]
    fn unrelated_workloads_leave_no_trace() {
        let mut w = Workloads::default();
        let ours = deployment("payments", "api");
        w.secret_added(ours.clone());
        for i in 0..10_000 {
            let other = deployment(&format!("ns-{}", i % 50), &format!("app-{i}"));
            assert_eq!(w.on_event(seen(other.clone(), None, i % 2 == 0)), None);
            assert_eq!(w.on_event(seen(other.clone(), Some("now"), false)), None);
            w.on_event(WorkloadEvent::Deleted { key: other });
        }
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn force_sync_is_a_change_witnessed_on_a_tracked_owner() {
        let mut w = Workloads::default();
        let api = deployment("payments", "api");
        w.secret_added(api.clone());
        w.secret_added(api.clone());
        // The relist reports a value set long ago: baseline only.
        assert_eq!(w.on_event(seen(api.clone(), Some("old"), true)), None);
        assert_eq!(w.on_event(seen(api.clone(), Some("old"), false)), None);
        assert_eq!(
            w.on_event(seen(api.clone(), Some("new"), false)),
            Some(api.clone())
        );
        // Removing the annotation is not a request.
        assert_eq!(w.on_event(seen(api.clone(), None, false)), None);
        // Deleted and re-created: a fresh baseline, no request from its first event.
        w.on_event(WorkloadEvent::Deleted { key: api.clone() });
        assert_eq!(w.on_event(seen(api.clone(), Some("x"), false)), None);
        assert_eq!(
            w.on_event(seen(api.clone(), Some("y"), false)),
            Some(api.clone())
        );
        // Forgotten with its last Secret.
        w.secret_removed(&api);
        assert_eq!(w.len(), 1);
        w.secret_removed(&api);
        assert_eq!(w.len(), 0);
        assert_eq!(w.on_event(seen(api, Some("z"), false)), None);
        assert_eq!(w.len(), 0);
    }
}
