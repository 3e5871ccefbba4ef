//! The store: objects, the global resourceVersion, watch history and counters; create,
//! update, patch and delete as the real server applies them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use crate::handlers::PatchType;
use crate::instance::{TokenRequestRecord, TokenReviewRecord};
use crate::object::{
    finalizers, meta, meta_str, new_uid, now_unix, random_suffix, remove_key, remove_meta, rfc3339,
    rv_number, set_meta, strip_smp_directives, uid_of, without_meta_and_status,
};
use crate::resources::{res, resource_for_kind, ResourceInfo};
use crate::status::{ApiError, ApiResult, FieldError};
use crate::tokens::SigningKeys;
use crate::validation::{
    check_type_meta, decode_resource, reset_status_for_create, set_namespace_from_url,
    validate_metadata, validate_resource,
};
use crate::{
    DEFAULT_BOOKMARK_INTERVAL, DEFAULT_HISTORY_LIMIT, EVENT_CHANNEL_CAPACITY, SELF_NAMESPACE,
    SELF_SERVICE_ACCOUNT, SYSTEM_NAMESPACES,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as recorded for watch replay and fan-out.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    pub(crate) rv: u64,
    pub(crate) resource: &'static str,
    pub(crate) kind: EventKind,
    /// The new state (for DELETED: the last state, carrying the deletion's resourceVersion).
    pub(crate) object: Value,
    /// For MODIFIED: the state before, so selector-filtered watches can turn the change into
    /// ADDED or DELETED as the real watch cache does.
    pub(crate) previous: Option<Value>,
}

pub(crate) struct InjectedFailure {
    pub(crate) verb: String,
    pub(crate) resource: String,
    pub(crate) code: u16,
    pub(crate) remaining: u32,
}

pub(crate) type ObjectKey = (String, String);

pub(crate) struct State {
    pub(crate) rv: u64,
    pub(crate) objects: HashMap<&'static str, BTreeMap<ObjectKey, Value>>,
    pub(crate) history: VecDeque<Arc<StoredEvent>>,
    pub(crate) history_limit: usize,
    /// The highest resourceVersion dropped from `history` (a watch from below it is expired).
    pub(crate) compacted_rv: u64,
    pub(crate) events: broadcast::Sender<Arc<StoredEvent>>,

    pub(crate) counts: BTreeMap<(String, String), u64>,
    pub(crate) writes: BTreeMap<String, u64>,
    pub(crate) dry_runs: BTreeMap<(String, String), u64>,
    pub(crate) total_requests: u64,
    pub(crate) token_requests: Vec<TokenRequestRecord>,
    pub(crate) token_reviews: Vec<TokenReviewRecord>,

    pub(crate) injected_failures: Vec<InjectedFailure>,
    pub(crate) bookmark_interval: Duration,
    pub(crate) require_namespaces: bool,
}

pub(crate) struct Inner {
    pub(crate) state: Mutex<State>,
    pub(crate) keys: &'static SigningKeys,
    pub(crate) addr: SocketAddr,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Resource keys whose list and watch requests are held unanswered (`hold_reads`).
    pub(crate) held: watch::Sender<std::collections::BTreeSet<String>>,
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns once list/watch requests on `key` are no longer held (see `StandIn::hold_reads`).
    pub(crate) async fn released(&self, key: &str) {
        let mut rx = self.held.subscribe();
        let _ = rx.wait_for(|held| !held.contains(key)).await;
    }

    /// What a fresh cluster (with this webhook installed) already holds.
    pub(crate) fn bootstrap(&self) {
        let mut state = self.state();
        for ns in SYSTEM_NAMESPACES.iter().chain([&SELF_NAMESPACE]) {
            state.seed(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns}, "status": {"phase": "Active"}}));
        }
        state.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": SELF_SERVICE_ACCOUNT, "namespace": SELF_NAMESPACE}}));
    }
}

fn key_of(object: &Value) -> ObjectKey {
    (
        meta_str(object, "namespace").unwrap_or("").to_string(),
        meta_str(object, "name").unwrap_or("").to_string(),
    )
}

impl State {
    pub(crate) fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        State {
            rv: 0,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: DEFAULT_HISTORY_LIMIT,
            compacted_rv: 0,
            events,
            counts: BTreeMap::new(),
            writes: BTreeMap::new(),
            dry_runs: BTreeMap::new(),
            total_requests: 0,
            token_requests: Vec::new(),
            token_reviews: Vec::new(),
            injected_failures: Vec::new(),
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            require_namespaces: false,
        }
    }

    pub(crate) fn bucket(&self, info: &ResourceInfo) -> Option<&BTreeMap<ObjectKey, Value>> {
        self.objects.get(info.id)
    }

    pub(crate) fn get(&self, info: &ResourceInfo, namespace: &str, name: &str) -> Option<&Value> {
        let ns = if info.namespaced { namespace } else { "" };
        self.bucket(info)?.get(&(ns.to_string(), name.to_string()))
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Persist a change and publish it. `object` already carries its new resourceVersion.
    fn commit(
        &mut self,
        info: &'static ResourceInfo,
        kind: EventKind,
        object: Value,
        previous: Option<Value>,
    ) {
        let key = key_of(&object);
        let bucket = self.objects.entry(info.id).or_default();
        match kind {
            EventKind::Deleted => {
                bucket.remove(&key);
            }
            EventKind::Added | EventKind::Modified => {
                bucket.insert(key, object.clone());
            }
        }
        let event = Arc::new(StoredEvent {
            rv: rv_number(&object),
            resource: info.id,
            kind,
            object,
            previous,
        });
        self.history.push_back(event.clone());
        self.trim_history();
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    pub(crate) fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_rv = dropped.rv;
            }
        }
        if self.history_limit == 0 {
            self.compacted_rv = self.rv;
        }
    }

    /// Delete now, whatever the finalizers say. Returns the object as it was last stored.
    pub(crate) fn remove_now(&mut self, info: &'static ResourceInfo, old: Value) -> Value {
        let rv = self.next_rv();
        let mut gone = old.clone();
        set_meta(&mut gone, "resourceVersion", json!(rv.to_string()));
        self.commit(info, EventKind::Deleted, gone, None);
        old
    }

    pub(crate) fn seed(&mut self, mut object: Value) -> Value {
        let api_version = object["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = object["kind"].as_str().unwrap_or("").to_string();
        let info = resource_for_kind(&api_version, &kind)
            .unwrap_or_else(|| panic!("seed: the stand-in does not serve {api_version} {kind}"));
        if info.namespaced {
            if meta_str(&object, "namespace").unwrap_or("").is_empty() {
                set_meta(&mut object, "namespace", json!("default"));
            }
        } else {
            remove_meta(&mut object, "namespace");
        }
        if let Err(err) = decode_resource(info, &mut object) {
            panic!("seed: {}", err.message);
        }
        let (ns, name) = key_of(&object);
        assert!(!name.is_empty(), "seed: metadata.name is required");
        let existing = self.get(info, &ns, &name).cloned();
        if meta_str(&object, "uid").unwrap_or("").is_empty() {
            let uid = existing
                .as_ref()
                .map(|o| uid_of(o).to_string())
                .unwrap_or_else(new_uid);
            set_meta(&mut object, "uid", json!(uid));
        }
        if meta_str(&object, "creationTimestamp")
            .unwrap_or("")
            .is_empty()
        {
            let created = existing
                .as_ref()
                .and_then(|o| meta_str(o, "creationTimestamp").map(str::to_string))
                .unwrap_or_else(|| rfc3339(now_unix()));
            set_meta(&mut object, "creationTimestamp", json!(created));
        }
        if info.generation && meta(&object).and_then(|m| m.get("generation")).is_none() {
            set_meta(&mut object, "generation", json!(1));
        }
        let rv = self.next_rv();
        set_meta(&mut object, "resourceVersion", json!(rv.to_string()));
        let kind = if existing.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.commit(info, kind, object.clone(), existing);
        object
    }

    // ----------------------------------------------------------------------------------------
    // Verbs. Each runs entirely under the state lock, so it is atomic like an etcd transaction.
    // ----------------------------------------------------------------------------------------

    pub(crate) fn create(
        &mut self,
        info: &'static ResourceInfo,
        namespace: &str,
        mut object: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        check_type_meta(info, &mut object)?;
        set_namespace_from_url(info, namespace, &mut object)?;
        if meta(&object)
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::new(
                500,
                "",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if meta_str(&object, "name").unwrap_or("").is_empty() {
            if let Some(prefix) = meta_str(&object, "generateName").filter(|p| !p.is_empty()) {
                let name = format!("{prefix}{}", random_suffix());
                set_meta(&mut object, "name", json!(name));
            }
        }
        decode_resource(info, &mut object)?;
        let name = meta_str(&object, "name").unwrap_or("").to_string();
        let mut errors = validate_metadata(info, &object);
        errors.extend(validate_resource(info, &object, None));
        if !errors.is_empty() {
            return Err(ApiError::invalid_object(info, &name, &errors));
        }
        if info.namespaced
            && self.require_namespaces
            && self.get(res("namespaces"), "", namespace).is_none()
        {
            return Err(ApiError::not_found(res("namespaces"), namespace));
        }
        if self.get(info, namespace, &name).is_some() {
            return Err(ApiError::already_exists(info, &name));
        }

        // System fields, as rest.BeforeCreate fills them (client values are overwritten).
        set_meta(&mut object, "uid", json!(new_uid()));
        set_meta(&mut object, "creationTimestamp", json!(rfc3339(now_unix())));
        remove_meta(&mut object, "deletionTimestamp");
        remove_meta(&mut object, "deletionGracePeriodSeconds");
        if info.generation {
            set_meta(&mut object, "generation", json!(1));
        } else {
            remove_meta(&mut object, "generation");
        }
        if info.status {
            reset_status_for_create(info, &mut object);
        }
        if dry_run {
            return Ok(object);
        }
        let rv = self.next_rv();
        set_meta(&mut object, "resourceVersion", json!(rv.to_string()));
        self.commit(info, EventKind::Added, object.clone(), None);
        Ok(object)
    }

    /// PUT (and the second half of PATCH). `status_only` is the `/status` subresource.
    pub(crate) fn update(
        &mut self,
        info: &'static ResourceInfo,
        namespace: &str,
        name: &str,
        mut object: Value,
        status_only: bool,
        dry_run: bool,
    ) -> ApiResult<(u16, Value)> {
        check_type_meta(info, &mut object)?;
        set_namespace_from_url(info, namespace, &mut object)?;
        let body_name = meta_str(&object, "name").unwrap_or("").to_string();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let Some(old) = self.get(info, namespace, name).cloned() else {
            if info.create_on_update && !status_only {
                remove_meta(&mut object, "resourceVersion");
                return self
                    .create(info, namespace, object, dry_run)
                    .map(|o| (201, o));
            }
            return Err(ApiError::not_found(info, name));
        };
        let old_rv = meta_str(&old, "resourceVersion").unwrap_or("").to_string();
        let new_rv = meta_str(&object, "resourceVersion")
            .unwrap_or("")
            .to_string();
        if !new_rv.is_empty() && new_rv != old_rv {
            return Err(ApiError::modified(info, name));
        }
        decode_resource(info, &mut object)?;

        let mut updated = if status_only {
            let mut updated = old.clone();
            match object.get("status") {
                Some(status) => updated["status"] = status.clone(),
                None => remove_key(&mut updated, "status"),
            }
            updated
        } else {
            if info.status {
                match old.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => remove_key(&mut object, "status"),
                }
            }
            object
        };

        // System fields, as rest.BeforeUpdate treats them.
        let mut errors = Vec::new();
        match meta_str(&updated, "uid").unwrap_or("") {
            "" => set_meta(&mut updated, "uid", json!(uid_of(&old))),
            uid if uid != uid_of(&old) => errors.push(FieldError::invalid(
                "metadata.uid",
                json!(uid),
                "field is immutable",
            )),
            _ => {}
        }
        for field in [
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match meta(&old).and_then(|m| m.get(field)).cloned() {
                Some(value) => set_meta(&mut updated, field, value),
                None => remove_meta(&mut updated, field),
            }
        }
        set_meta(&mut updated, "resourceVersion", json!(old_rv));
        if info.generation {
            let old_generation = meta(&old)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let bumped =
                !status_only && without_meta_and_status(&updated) != without_meta_and_status(&old);
            set_meta(
                &mut updated,
                "generation",
                json!(old_generation + i64::from(bumped)),
            );
        } else {
            match meta(&old).and_then(|m| m.get("generation")).cloned() {
                Some(generation) => set_meta(&mut updated, "generation", generation),
                None => remove_meta(&mut updated, "generation"),
            }
        }

        errors.extend(validate_metadata(info, &updated));
        errors.extend(validate_resource(info, &updated, Some(&old)));
        let deleting = meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp"));
        if deleting {
            let before: BTreeSet<&str> = finalizers(&old).into_iter().collect();
            let added: Vec<&str> = finalizers(&updated)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                errors.push(FieldError::forbidden(
                    "metadata.finalizers",
                    format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid_object(info, name, &errors));
        }

        if updated == old || dry_run {
            // A no-op update writes nothing and emits nothing, as on the real server.
            return Ok((200, updated));
        }
        let rv = self.next_rv();
        set_meta(&mut updated, "resourceVersion", json!(rv.to_string()));
        if deleting && finalizers(&updated).is_empty() {
            // The last finalizer is gone: the pending deletion completes.
            self.commit(info, EventKind::Deleted, updated.clone(), None);
        } else {
            self.commit(info, EventKind::Modified, updated.clone(), Some(old));
        }
        Ok((200, updated))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        info: &'static ResourceInfo,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch: Value,
        status_only: bool,
        dry_run: bool,
    ) -> ApiResult<(u16, Value)> {
        let Some(old) = self.get(info, namespace, name).cloned() else {
            if patch_type == PatchType::Apply && !status_only {
                // Server-side apply creates a missing object.
                let mut object = patch;
                let body_name = meta_str(&object, "name").unwrap_or("").to_string();
                if body_name != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({body_name}) does not match the name on the URL ({name})"
                    )));
                }
                if object.get("status").is_some() && info.status {
                    remove_key(&mut object, "status");
                }
                return self
                    .create(info, namespace, object, dry_run)
                    .map(|o| (201, o));
            }
            return Err(ApiError::not_found(info, name));
        };
        let mut patched = old.clone();
        match patch_type {
            PatchType::Json => {
                let operations: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                json_patch::patch(&mut patched, &operations.0)
                    .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
            }
            PatchType::Merge | PatchType::Apply => json_patch::merge(&mut patched, &patch),
            PatchType::Strategic => json_patch::merge(&mut patched, &strip_smp_directives(patch)),
        }
        let old_rv = meta_str(&old, "resourceVersion").unwrap_or("").to_string();
        match meta_str(&patched, "resourceVersion") {
            Some(rv) if !rv.is_empty() && rv != old_rv => {
                return Err(ApiError::modified(info, name));
            }
            _ => set_meta(&mut patched, "resourceVersion", json!(old_rv)),
        }
        self.update(info, namespace, name, patched, status_only, dry_run)
    }

    pub(crate) fn delete(
        &mut self,
        info: &'static ResourceInfo,
        namespace: &str,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let Some(old) = self.get(info, namespace, name).cloned() else {
            return Err(ApiError::not_found(info, name));
        };
        let preconditions = &options["preconditions"];
        if let Some(uid) = preconditions["uid"].as_str() {
            if uid != uid_of(&old) {
                return Err(ApiError::conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        uid_of(&old)
                    ),
                ));
            }
        }
        if let Some(rv) = preconditions["resourceVersion"].as_str() {
            let current = meta_str(&old, "resourceVersion").unwrap_or("");
            if rv != current {
                return Err(ApiError::conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {current}"
                    ),
                ));
            }
        }
        if dry_run {
            return Ok(old);
        }
        Ok(self.delete_object(info, old))
    }

    /// Delete honouring finalizers: with finalizers the object only gets a deletionTimestamp.
    pub(crate) fn delete_object(&mut self, info: &'static ResourceInfo, old: Value) -> Value {
        if finalizers(&old).is_empty() {
            return self.remove_now(info, old);
        }
        if meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return old;
        }
        let mut marked = old.clone();
        set_meta(&mut marked, "deletionTimestamp", json!(rfc3339(now_unix())));
        set_meta(&mut marked, "deletionGracePeriodSeconds", json!(0));
        let rv = self.next_rv();
        set_meta(&mut marked, "resourceVersion", json!(rv.to_string()));
        self.commit(info, EventKind::Modified, marked.clone(), Some(old));
        marked
    }
}
