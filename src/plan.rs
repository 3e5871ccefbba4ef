//! The pure half of admission, shared by the webhook (`admission::mutate`) and the offline
//! check (`render`): the pod's annotations merged over its workload's → an injection spec →
//! the pod patch. No I/O, so what `secret-injector render` prints is what `/mutate` decides.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::patch::{self, PatchError, PodPatch};
use crate::pod::PodView;
use crate::spec::{self, InjectionSpec, ParseContext, SpecError};

/// Why a pod cannot be injected, before any store or backend is looked at. The `Display`
/// text is the denial message (admission turns each variant into its own denial unchanged).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Patch(#[from] PatchError),
}

/// What the webhook will do to the pod, computed from annotations alone.
#[derive(Debug, PartialEq)]
pub struct Planned {
    pub spec: InjectionSpec,
    pub patch: PodPatch,
}

/// Names of every init container and container of the pod, init containers first.
pub fn container_names(pod: &PodView<'_>) -> Vec<String> {
    pod.all_containers().map(|c| c.name.to_string()).collect()
}

/// Parse the pod's annotations, merged over the owner chain's (`workload_annotations`, already
/// merged top-most first), and plan the patch. `Ok(None)`: nothing to inject.
pub fn plan(
    pod: &PodView<'_>,
    workload_name: Option<&str>,
    workload_annotations: &BTreeMap<String, String>,
    min_refresh_interval: Duration,
) -> Result<Option<Planned>, PlanError> {
    // The configuration annotations alone (the pod's may be many, and large).
    let mut config = spec::config_annotations(workload_annotations);
    config.extend(
        pod.annotations
            .iter()
            .flatten()
            .filter(|(k, _)| spec::is_config_key(k))
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let container_names = container_names(pod);
    let Some(spec) = spec::parse_config(
        &config,
        &ParseContext {
            workload_name,
            container_names: &container_names,
            min_refresh_interval,
        },
    )?
    else {
        return Ok(None);
    };
    let patch = patch::plan(pod, &spec)?;
    Ok(Some(Planned { spec, patch }))
}

/// Dynamic secrets and certificates are issued by Vault/OpenBao stores only: an item asking
/// for one from another backend (`provider`, the store's `spec.provider` key) is denied naming
/// its annotation or field. Shared by admission and `render --stores`.
pub fn check_issued_store(item: &spec::SecretItem, provider: &str) -> Result<(), SpecError> {
    let kind = match (&item.dynamic, &item.certificate) {
        (Some(_), _) => "dynamic",
        (_, Some(_)) => "certificate",
        _ => return Ok(()),
    };
    if provider == "vault" {
        return Ok(());
    }
    let key = if item.origin.starts_with(spec::ANN_EXTERNAL_SECRETS) {
        format!("{}.{kind}", item.origin)
    } else {
        spec::ANN_DYNAMIC.to_string()
    };
    Err(SpecError::Invalid {
        key,
        message: format!(
            "{} is a {provider} store; dynamic secrets and certificates are issued by \
             Vault/OpenBao stores only",
            item.store
        ),
    })
}
