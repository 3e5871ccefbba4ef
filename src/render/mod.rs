//! `secret-injector render`: check manifests offline. For every workload it builds the pod its
//! controller would create and runs the webhook's own pure stages on it ([`crate::plan`]:
//! annotations → spec → patch; with `--stores`, the store lookup and the validation the
//! validating webhook runs). It prints the managed Secrets (references only — there are no
//! values offline), the JSON patch, or the denial exactly as `/mutate` would word it.
//! No Kubernetes client is built and no backend is contacted.

mod input;
mod output;
mod report;
mod stores;
mod workload;

use std::time::Duration;

use crate::config::{RenderArgs, RenderOutput};
use crate::store::EndpointPolicy;

pub use input::{read_inputs, Input, InputError};
pub use report::{
    FilesReport, InjectReport, Outcome, Report, SecretReport, Skipped, StoreCheck, StoreReport,
    Summary, WorkloadReport,
};

use input::{documents, kind_of, str_at};
use stores::{namespace_labels, store_entry, store_kind, Catalog};
use workload::{check_workload, workload_pod};

/// Exit code: every workload would be admitted (and every store given is valid).
pub const EXIT_OK: i32 = 0;
/// Exit code: at least one workload would be denied, or a store is invalid.
pub const EXIT_DENIED: i32 = 1;
/// Exit code: an input could not be read or parsed.
pub const EXIT_INPUT: i32 = 2;

/// Settings that change a verdict; the same flags (and env vars) as `serve`.
#[derive(Clone, Debug)]
pub struct Options {
    pub min_refresh_interval: Duration,
    pub endpoints: EndpointPolicy,
    /// Namespace of objects that do not name one.
    pub default_namespace: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            min_refresh_interval: Duration::from_secs(10),
            endpoints: EndpointPolicy::default(),
            default_namespace: "default".into(),
        }
    }
}

/// Check `inputs`; `stores` (with `--stores`) are the store objects to check references against.
pub fn render(
    inputs: &[Input],
    stores: Option<&[Input]>,
    options: &Options,
) -> Result<Report, InputError> {
    let mut objects = Vec::new();
    for input in inputs {
        objects.extend(documents(input)?);
    }
    let mut store_objects = Vec::new();
    for input in stores.unwrap_or_default() {
        store_objects.extend(documents(input)?);
    }

    let mut catalog = Catalog::default();
    for object in objects.iter().chain(&store_objects) {
        if let Some((name, labels)) = namespace_labels(object) {
            catalog.namespaces.insert(name, labels);
        }
    }
    let mut store_reports = Vec::new();
    if stores.is_some() {
        let mut entries = Vec::new();
        for object in &store_objects {
            if let Some(kind) = store_kind(object) {
                let (entry, report) = store_entry(object, kind, options);
                entries.push(entry);
                store_reports.push(report);
            }
        }
        catalog.stores = Some(entries);
    }

    let mut workloads = Vec::new();
    let mut skipped = Vec::new();
    for object in &objects {
        match workload_pod(object, options)? {
            Some(w) => workloads.push(check_workload(object, w, &catalog, options)),
            None => {
                let (_, kind) = kind_of(&object.value);
                let reason = if store_kind(object).is_some() {
                    "a store; pass it with --stores to check references against it"
                } else if kind == "Namespace" {
                    "not a workload (its labels are used for the opt-in and store conditions)"
                } else {
                    "not a workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, \
                     CronJob or Pod)"
                };
                skipped.push(Skipped {
                    file: object.file.clone(),
                    document: object.document,
                    name: str_at(&object.value, &["metadata", "name"])
                        .unwrap_or_default()
                        .to_string(),
                    kind,
                    reason: reason.into(),
                });
            }
        }
    }
    let summary = Summary {
        workloads: workloads.len(),
        injected: count(&workloads, Outcome::Injected),
        denied: count(&workloads, Outcome::Denied),
        not_injected: count(&workloads, Outcome::NotInjected),
        invalid_stores: store_reports.iter().filter(|s| s.denial.is_some()).count(),
    };
    Ok(Report {
        workloads,
        stores: stores.is_some().then_some(store_reports),
        skipped,
        summary,
    })
}

fn count(workloads: &[WorkloadReport], outcome: Outcome) -> usize {
    workloads.iter().filter(|w| w.result == outcome).count()
}

/// The `render` subcommand: prints the report to stdout and returns the exit code.
pub fn run(args: &RenderArgs) -> i32 {
    let options = Options {
        min_refresh_interval: args.min_refresh_interval,
        endpoints: EndpointPolicy {
            vault: args.allowed_vault_servers.0.clone(),
            aws: args.allowed_aws_endpoints.0.clone(),
        },
        default_namespace: args.namespace.clone(),
    };
    let result = read_inputs(&args.files, args.recursive).and_then(|inputs| {
        let stores = if args.stores.is_empty() {
            None
        } else {
            Some(read_inputs(&args.stores, args.recursive)?)
        };
        render(&inputs, stores.as_deref(), &options)
    });
    match result {
        Ok(report) => {
            match args.output {
                RenderOutput::Text => print!("{}", report.to_text()),
                RenderOutput::Json => print!("{}", report.to_json()),
            }
            report.exit_code()
        }
        Err(e) => {
            eprintln!("secret-injector render: {e}");
            EXIT_INPUT
        }
    }
}

#[cfg(test)]
mod tests;
