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

/// A workload as the refresher keys it: without uid (as rollouts are), its namespace's name
/// shared with the index's keys. Small: one is held per owner of a tracked Secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct WorkloadKey {
    pub namespace: Arc<str>,
    kind: Kind,
    pub name: Box<str>,
}

/// [`OwnerKind`], with the rare other controller's kind boxed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Known(WorkloadKind),
    Other(Box<(String, String)>),
}

impl WorkloadKey {
    /// The workload `owner` names, in `namespace` (the owner's, as the index shares it).
    pub(super) fn of(namespace: &Arc<str>, owner: &Owner) -> WorkloadKey {
        debug_assert_eq!(**namespace, owner.namespace);
        WorkloadKey {
            namespace: namespace.clone(),
            kind: match &owner.kind {
                OwnerKind::Known(k) => Kind::Known(*k),
                OwnerKind::Other { api_version, kind } => {
                    Kind::Other(Box::new((api_version.clone(), kind.clone())))
                }
            },
            name: owner.name.as_str().into(),
        }
    }

    fn known(namespace: &str, kind: WorkloadKind, name: &str) -> WorkloadKey {
        WorkloadKey {
            namespace: namespace.into(),
            kind: Kind::Known(kind),
            name: name.into(),
        }
    }

    pub(super) fn kind(&self) -> &str {
        match &self.kind {
            Kind::Known(k) => k.as_str(),
            Kind::Other(other) => &other.1,
        }
    }
}

/// One workload watch event, reduced to what the refresher needs.
pub(super) enum WorkloadEvent {
    Seen {
        key: WorkloadKey,
        force_sync: Option<String>,
        /// Part of a (re)list: a value set long ago, not a request witnessed now.
        initial: bool,
    },
    Deleted {
        key: WorkloadKey,
    },
}

#[derive(Debug, Default)]
struct Tracked {
    /// Managed Secrets (in the work list) this workload owns; the entry goes at 0.
    secrets: u32,
    /// The last force-sync seen; None until the first event after tracking began.
    force_sync: Option<Option<Box<str>>>,
}

/// Owners of tracked managed Secrets. Each is held once, shared with the work list's entries
/// of its Secrets.
#[derive(Debug, Default)]
pub(super) struct Workloads {
    owners: HashMap<Arc<WorkloadKey>, Tracked>,
}

impl Workloads {
    /// A tracked managed Secret of `owner` appeared; the owner as held here.
    pub(super) fn secret_added(&mut self, owner: WorkloadKey) -> Arc<WorkloadKey> {
        let shared = match self.owners.get_key_value(&owner) {
            Some((shared, _)) => shared.clone(),
            None => Arc::new(owner),
        };
        self.owners.entry(shared.clone()).or_default().secrets += 1;
        shared
    }

    /// A tracked managed Secret of `owner` left the work list.
    pub(super) fn secret_removed(&mut self, owner: &WorkloadKey) {
        if let Some(t) = self.owners.get_mut(owner) {
            t.secrets = t.secrets.saturating_sub(1);
            if t.secrets == 0 {
                self.owners.remove(owner);
            }
        }
    }

    /// A workload event. Returns the owner whose Secrets must be refreshed now, when the
    /// event is a force-sync request witnessed live on a workload we track.
    pub(super) fn on_event(&mut self, event: WorkloadEvent) -> Option<WorkloadKey> {
        match event {
            WorkloadEvent::Seen {
                key,
                force_sync,
                initial,
            } => {
                // Not an owner of a tracked Secret: remember nothing.
                let tracked = self.owners.get_mut(&key)?;
                let force_sync: Option<Box<str>> = force_sync.map(Into::into);
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
    let key = move |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        WorkloadKey::known(
            meta.namespace.as_deref().unwrap_or_default(),
            kind,
            meta.name.as_deref().unwrap_or_default(),
        )
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

    fn deployment(ns: &str, name: &str) -> WorkloadKey {
        WorkloadKey::known(ns, WorkloadKind::Deployment, name)
    }

    fn seen(key: WorkloadKey, force_sync: Option<&str>, initial: bool) -> WorkloadEvent {
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
