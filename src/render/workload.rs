//! Workloads: the pod a workload's controller would create, and admission's decision for it
//! (the webhook's own pure stages, [`crate::plan`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::input::{decode, kind_of, InputError, Object};
use super::report::{FilesReport, InjectReport, Outcome, SecretReport, StoreCheck, WorkloadReport};
use super::stores::Catalog;
use super::Options;
use crate::plan;
use crate::pod::PodView;
use crate::spec::{self, SecretItem, StoreRef};

const OPT_IN_LABEL: &str = "secret-injector.io/inject";

/// The pod a workload's controller creates, and what admission learns from its owner chain.
pub(super) struct WorkloadPod {
    kind: String,
    name: String,
    namespace: String,
    pod: Pod,
    /// The top-most owner's name (the bare pod's own name); `None` with only `generateName`.
    workload_name: Option<String>,
    /// The owner chain's annotations, merged top-most first (as `workload::resolve` does).
    chain_annotations: BTreeMap<String, String>,
}

fn pod_from(meta: &ObjectMeta, template: Option<PodTemplateSpec>, namespace: &str) -> Pod {
    let template = template.unwrap_or_default();
    let mut pod_meta = template.metadata.unwrap_or_default();
    pod_meta.namespace = Some(namespace.to_string());
    if let Some(name) = &meta.name {
        // What the controller's pods look like: a generated name under the owner's.
        pod_meta.generate_name = Some(format!("{name}-"));
    }
    Pod {
        metadata: pod_meta,
        spec: template.spec,
        status: None,
    }
}

fn annotations(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.annotations.clone().unwrap_or_default()
}

/// `Ok(None)`: not a workload kind.
pub(super) fn workload_pod(
    object: &Object,
    options: &Options,
) -> Result<Option<WorkloadPod>, InputError> {
    let (group, kind) = kind_of(&object.value);
    let ns = |meta: &ObjectMeta| {
        meta.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| options.default_namespace.clone())
    };
    // Controllers that copy their own annotations onto what they create (Deployment →
    // ReplicaSet) make the same merged map as the owner chain does at admission.
    let owned = |meta: ObjectMeta, template: Option<PodTemplateSpec>, chain| {
        let namespace = ns(&meta);
        WorkloadPod {
            kind: kind.clone(),
            name: meta.name.clone().unwrap_or_default(),
            pod: pod_from(&meta, template, &namespace),
            namespace,
            workload_name: meta.name.clone(),
            chain_annotations: chain,
        }
    };
    let w = match (group.as_str(), kind.as_str()) {
        ("apps", "Deployment") => {
            let d: Deployment = decode(object, &kind)?;
            let chain = annotations(&d.metadata);
            owned(d.metadata, d.spec.map(|s| s.template), chain)
        }
        ("apps", "StatefulSet") => {
            let d: StatefulSet = decode(object, &kind)?;
            let chain = annotations(&d.metadata);
            owned(d.metadata, d.spec.map(|s| s.template), chain)
        }
        ("apps", "DaemonSet") => {
            let d: DaemonSet = decode(object, &kind)?;
            let chain = annotations(&d.metadata);
            owned(d.metadata, d.spec.map(|s| s.template), chain)
        }
        ("apps", "ReplicaSet") => {
            let d: ReplicaSet = decode(object, &kind)?;
            let chain = annotations(&d.metadata);
            owned(d.metadata, d.spec.and_then(|s| s.template), chain)
        }
        ("batch", "Job") => {
            let d: Job = decode(object, &kind)?;
            let chain = annotations(&d.metadata);
            owned(d.metadata, d.spec.map(|s| s.template), chain)
        }
        ("batch", "CronJob") => {
            let d: CronJob = decode(object, &kind)?;
            // CronJob → Job (jobTemplate.metadata) → pod; lower levels override.
            let mut chain = annotations(&d.metadata);
            let job = d.spec.map(|s| s.job_template);
            if let Some(job_meta) = job.as_ref().and_then(|j| j.metadata.as_ref()) {
                chain.extend(annotations(job_meta));
            }
            owned(
                d.metadata,
                job.and_then(|j| j.spec).map(|s| s.template),
                chain,
            )
        }
        ("", "Pod") => {
            let mut pod: Pod = decode(object, &kind)?;
            let namespace = ns(&pod.metadata);
            pod.metadata.namespace = Some(namespace.clone());
            pod.status = None;
            WorkloadPod {
                kind: kind.clone(),
                name: pod
                    .metadata
                    .name
                    .clone()
                    .or_else(|| pod.metadata.generate_name.as_ref().map(|g| format!("{g}*")))
                    .unwrap_or_default(),
                namespace,
                workload_name: pod.metadata.name.clone(),
                chain_annotations: BTreeMap::new(),
                pod,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(w))
}

fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

fn secret_report(item: &SecretItem, store_check: StoreCheck) -> SecretReport {
    SecretReport {
        name: item.secret_name.clone(),
        origin: item.origin.clone(),
        store: item.store.clone(),
        store_check,
        refresh_interval: spec::format_duration(item.refresh_interval),
        rollout: item.rollout.as_str().to_string(),
        keys: item.data.iter().map(|d| d.secret_key.clone()).collect(),
        data: item.data.clone(),
        extract: item.extract.clone(),
        dynamic: item.dynamic.clone(),
        certificate: item.certificate.clone(),
        inject: InjectReport {
            env: item.exposure.env_keys.clone(),
            env_from: item.exposure.env_from,
            files: item.exposure.files.as_ref().map(|f| FilesReport {
                mount_path: f.mount_path.clone(),
                keys: f.keys.clone(),
            }),
        },
        containers: item.containers.clone(),
    }
}

fn has_config(annotations: &BTreeMap<String, String>) -> bool {
    spec::config_annotations(annotations)
        .keys()
        .any(|k| k != spec::ANN_INJECT)
}

/// Admission's decision for one workload's pod, offline.
pub(super) fn check_workload(
    object: &Object,
    w: WorkloadPod,
    catalog: &Catalog,
    options: &Options,
) -> WorkloadReport {
    let mut report = WorkloadReport {
        file: object.file.clone(),
        document: object.document,
        kind: w.kind.clone(),
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        service_account: service_account(&w.pod),
        result: Outcome::NotInjected,
        denial: None,
        reason: None,
        secrets: Vec::new(),
        patch: Vec::new(),
        warnings: Vec::new(),
        notes: Vec::new(),
    };
    let pod_annotations = w.pod.metadata.annotations.clone().unwrap_or_default();
    if let Some(labels) = catalog.namespaces.get(&w.namespace) {
        if labels.get(OPT_IN_LABEL).map(String::as_str) != Some("enabled") {
            report.notes.push(format!(
                "namespace {} is not labelled {OPT_IN_LABEL}=enabled in this input: the \
                 webhook never sees its pods",
                w.namespace
            ));
        }
    }
    if w.namespace == "kube-system" {
        report
            .notes
            .push("pods in kube-system are never sent to the webhook".into());
    }
    // The same gate as `/mutate`: only the pod's own annotations decide whether it is looked at.
    if !spec::wants_injection(&pod_annotations) {
        report.reason = Some(
            if pod_annotations.get(spec::ANN_INJECT).map(|v| v.trim()) == Some("false") {
                format!("the pod opts out ({}: \"false\")", spec::ANN_INJECT)
            } else if has_config(&w.chain_annotations) {
                format!(
                    "the {}'s own metadata.annotations carry {}… settings but its pod template \
                     has none; the webhook acts only on pods that carry one (put them on the \
                     pod template's annotations)",
                    w.kind,
                    spec::PREFIX
                )
            } else {
                format!("no {}… annotation on the pod template", spec::PREFIX)
            },
        );
        return report;
    }
    let planned = match plan::plan(
        &PodView::of(&w.pod),
        w.workload_name.as_deref(),
        &w.chain_annotations,
        options.min_refresh_interval,
    ) {
        Ok(Some(p)) => p,
        Ok(None) => {
            let opted_out =
                w.chain_annotations.get(spec::ANN_INJECT).map(|v| v.trim()) == Some("false");
            report.reason = Some(if opted_out {
                format!(
                    "the {} opts its pods out ({}: \"false\")",
                    w.kind,
                    spec::ANN_INJECT
                )
            } else {
                "the annotations ask for nothing".into()
            });
            return report;
        }
        Err(e) => {
            report.result = Outcome::Denied;
            report.denial = Some(e.to_string());
            return report;
        }
    };
    // Stores in item order, each once: admission's order, so the first denial is the same.
    let mut checks: BTreeMap<StoreRef, StoreCheck> = BTreeMap::new();
    let mut backends: BTreeMap<StoreRef, &'static str> = BTreeMap::new();
    for item in &planned.spec.items {
        if checks.contains_key(&item.store) {
            continue;
        }
        match catalog.check(&item.store, &w.namespace, &options.endpoints) {
            Ok(found) => {
                if let Some((_, backend)) = found {
                    backends.insert(item.store.clone(), backend);
                }
                let check = found.map_or(StoreCheck::Unchecked, |(c, _)| c);
                if check == StoreCheck::Undecided {
                    report.notes.push(format!(
                        "{} admits namespace {} only through a namespaceSelector, and the input \
                         has no Namespace {} with its labels: not decided offline",
                        item.store, w.namespace, w.namespace
                    ));
                }
                checks.insert(item.store.clone(), check);
            }
            Err(e) => {
                report.result = Outcome::Denied;
                report.denial = Some(e.to_string());
                return report;
            }
        }
    }
    for item in &planned.spec.items {
        if let Some(backend) = backends.get(&item.store) {
            if let Err(e) = plan::check_issued_store(item, backend) {
                report.result = Outcome::Denied;
                report.denial = Some(e.to_string());
                return report;
            }
        }
    }
    report.result = Outcome::Injected;
    report.secrets = planned
        .spec
        .items
        .iter()
        .map(|item| secret_report(item, checks[&item.store]))
        .collect();
    report.patch = planned.patch.operations();
    report.warnings = planned.patch.warnings;
    report.notes.push(
        "not checked offline: whether a Secret of the same name already exists and is \
         someone else's, the ServiceAccount, and the backend's values"
            .into(),
    );
    report
}
