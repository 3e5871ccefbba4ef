//! What the refresher tracks about a managed Secret — its work-list entry, and the `Tracked`
//! one refresh parses from it — and what one refresh can end in (its variants are the `result`
//! label of `secret_injector_refreshes_total`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::identity::PodIdentity;
use crate::index::ObjKey;
use crate::k8s::api_error_message;
use crate::managed::{ManagedError, ManagedMeta, Recorded, RecordedError, Target};
use crate::pipeline::FetchError;
use crate::spec::ANN_INJECT;
use crate::store::StoreError;

use super::workloads::WorkloadKey;

/// What one refresh knows about a managed Secret, read from its metadata only.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracked {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    /// The request it was made for (source, ServiceAccount, interval, owner, rollout).
    pub record: Recorded,
    pub data_hmac: Option<String>,
    pub force_sync: Option<String>,
    pub created: Option<Timestamp>,
    /// Set by the loop for one run: a force-sync of an issued Secret re-issues it.
    pub force_reissue: bool,
}

impl Tracked {
    /// Parsed from the index's copy of the Secret, for one refresh (nothing of it is kept
    /// between refreshes: the work list holds the index's record itself).
    pub fn from_index(key: &ObjKey, meta: &ManagedMeta) -> Result<Tracked, RecordedError> {
        Ok(Tracked {
            namespace: key.namespace.to_string(),
            name: key.name.to_string(),
            uid: meta.uid().to_string(),
            resource_version: meta.resource_version().to_string(),
            record: Recorded::from_meta(meta)?,
            data_hmac: meta.data_hmac(),
            force_sync: meta.force_sync().map(str::to_string),
            created: meta.created(),
            force_reissue: false,
        })
    }

    pub(super) fn identity(&self) -> PodIdentity {
        PodIdentity {
            namespace: self.namespace.clone(),
            service_account: self.record.service_account.clone(),
        }
    }

    pub fn target(&self) -> Target {
        Target {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            record: self.record.clone(),
        }
    }
}

/// A managed Secret in the refresher's work list.
pub(super) struct Entry {
    /// The Secret as the index holds it (the same record, not a copy).
    pub meta: Arc<ManagedMeta>,
    /// Its resourceVersion after our own write, until the watch brings that version.
    pub written: Option<Box<str>>,
    /// Its workload, shared with `Refresher::workloads`.
    pub owner: Arc<WorkloadKey>,
    /// From its record, for the schedule and the filters that run over every entry.
    pub interval: Duration,
    pub issued: bool,
    /// Leases it holds (the current one and those retiring); None without a lease record.
    pub leases: Option<u32>,
    pub failures: u32,
    pub running: bool,
    /// A force-sync arrived while a refresh was running: run again when it ends.
    pub rerun: bool,
    /// A force-sync of an issued Secret: re-issue at the next run, whatever its lease says.
    pub force_reissue: bool,
}

impl Entry {
    pub fn new(meta: Arc<ManagedMeta>, tracked: &Tracked, owner: Arc<WorkloadKey>) -> Entry {
        let mut entry = Entry {
            meta,
            written: None,
            owner,
            interval: Duration::ZERO,
            issued: false,
            leases: None,
            failures: 0,
            running: false,
            rerun: false,
            force_reissue: false,
        };
        entry.note(tracked);
        entry
    }

    /// What the entry keeps of its parsed record.
    pub fn note(&mut self, tracked: &Tracked) {
        let record = &tracked.record;
        self.interval = record.refresh_interval;
        self.issued = record.source.is_issued();
        self.leases = record.lease.as_ref().map(|l| {
            u32::from(!l.id.is_empty()) + u32::try_from(l.retiring.len()).unwrap_or(u32::MAX)
        });
    }

    /// The Secret as one refresh sees it: its record parsed again, at the version last known.
    pub fn tracked(&self, key: &ObjKey) -> Option<Tracked> {
        let mut tracked = Tracked::from_index(key, &self.meta).ok()?;
        if let Some(v) = &self.written {
            tracked.resource_version = v.to_string();
        }
        Some(tracked)
    }
}

/// Leases an entry holds, for the sum.
pub(super) fn held(leases: Option<u32>) -> usize {
    leases.map_or(0, |n| n as usize)
}

/// A refresh that did its job.
#[derive(Debug, PartialEq, Eq)]
pub enum Refreshed {
    Unchanged,
    /// New data written; the Secret's new resourceVersion.
    Updated(Option<String>),
    /// The owner is gone: the Secret was deleted (and its leases revoked).
    Orphaned,
    /// A bare pod's Secret now names its pod (ownerReference set); the new resourceVersion.
    Adopted(Option<String>),
    /// A bare pod's Secret whose pod has not appeared yet (within the grace period).
    AwaitingPod,
    /// An issued Secret (dynamic secret, certificate): what happened to its lease, the
    /// Secret's new resourceVersion when it was written, and when it is next due.
    Lease {
        action: LeaseAction,
        version: Option<String>,
        due: Timestamp,
    },
}

/// What a refresh of an issued Secret did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// Nothing was due.
    Kept,
    /// The lease was renewed (same credentials).
    Renewed,
    /// New credentials were issued and written; the old lease retires after the grace period.
    Reissued,
    /// Replaced leases past their grace period were revoked.
    Retired,
}

/// A refresh that did not. Every variant maps to a fixed metric label.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Someone wrote the Secret since this refresh was scheduled (an admission, a newer
    /// leader): nothing was written; check again soon with the newer version.
    #[error("the Secret was written since this refresh started; it will be checked again")]
    Superseded,
    /// Not ours to refresh.
    #[error("namespace {0} is a system namespace")]
    SystemNamespace(String),
    #[error("namespace {0} is not labelled {ANN_INJECT}=enabled")]
    NotOptedIn(String),
    #[error("checking the owner {owner}: {}", api_error_message(.source))]
    Owner {
        owner: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting the orphaned Secret: {}", api_error_message(.0))]
    DeleteOrphan(#[source] kube::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Write(#[from] ManagedError),
    /// Renewing or revoking a lease failed (the backend's message, scrubbed).
    #[error("lease {op} failed: {error}")]
    Lease {
        op: &'static str,
        error: crate::provider::ProviderError,
    },
}

impl RefreshError {
    /// The `result` label of `secret_injector_refreshes_total`.
    pub fn label(&self) -> &'static str {
        match self {
            RefreshError::Superseded => "superseded",
            RefreshError::SystemNamespace(_) | RefreshError::NotOptedIn(_) => "skipped",
            RefreshError::Owner { .. }
            | RefreshError::DeleteOrphan(_)
            | RefreshError::Store(_)
            | RefreshError::Fetch(_)
            | RefreshError::Write(_)
            | RefreshError::Lease { .. } => "error",
        }
    }

    /// Not a failure: the Secret is not ours to refresh and is dropped from the work list.
    pub fn is_skip(&self) -> bool {
        self.label() == "skipped"
    }
}

impl Refreshed {
    /// The `result` label of `secret_injector_refreshes_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refreshed::Unchanged => "unchanged",
            Refreshed::Updated(_) => "updated",
            Refreshed::Orphaned => "orphaned",
            Refreshed::Adopted(_) => "adopted",
            Refreshed::AwaitingPod => "awaiting_pod",
            Refreshed::Lease { action, .. } => match action {
                LeaseAction::Kept => "unchanged",
                LeaseAction::Renewed => "renewed",
                LeaseAction::Reissued => "reissued",
                LeaseAction::Retired => "retired",
            },
        }
    }
}

pub type Outcome = Result<Refreshed, RefreshError>;
