//! The validating webhook for SecretStore and ClusterSecretStore. It runs the very conversion
//! the runtime uses (`store::validate_provider`), so an admitted store is guaranteed to load.
//! A validating answer never carries a patch.

use std::time::Instant;

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use tracing::{info, Instrument};

use super::{json_error, BadRequest};
use crate::metrics::Metrics;
use crate::store::{validate_store, EndpointPolicy};

const GROUP: &str = "secret-injector.io";

/// Handle one body sent to `/validate`.
pub async fn review_store(
    endpoints: &EndpointPolicy,
    metrics: &Metrics,
    body: &[u8],
) -> Result<AdmissionReview<DynamicObject>, BadRequest> {
    let started = Instant::now();
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(|e| {
        metrics.admission("validate", "invalid", started.elapsed().as_secs_f64());
        BadRequest(format!(
            "body is not an admission.k8s.io/v1 AdmissionReview ({})",
            json_error(&e)
        ))
    })?;
    let Ok(request) = TryInto::<AdmissionRequest<DynamicObject>>::try_into(review) else {
        metrics.admission("validate", "invalid", started.elapsed().as_secs_f64());
        return Ok(
            AdmissionResponse::invalid("the AdmissionReview carries no request").into_review(),
        );
    };
    let span = tracing::info_span!("validation", uid = %request.uid, kind = %request.kind.kind, name = %request.name);
    let response = async {
        let response = AdmissionResponse::from(&request);
        let is_store = request.kind.group == GROUP
            && matches!(
                request.kind.kind.as_str(),
                "SecretStore" | "ClusterSecretStore"
            )
            && matches!(request.operation, Operation::Create | Operation::Update);
        let Some(object) = request.object.as_ref().filter(|_| is_store) else {
            return response;
        };
        let object = match serde_json::to_value(object) {
            Ok(v) => v,
            Err(_) => return response.deny("the object could not be read"),
        };
        let verdict = validate_store(&request.kind.kind, &object, endpoints);
        let mut response = response;
        if !verdict.warnings.is_empty() {
            response.warnings = Some(verdict.warnings);
        }
        if verdict.errors.is_empty() {
            return response;
        }
        let what = match request.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => format!("{} {ns}/{}", request.kind.kind, request.name),
            _ => format!("{} {}", request.kind.kind, request.name),
        };
        let detail: Vec<String> = verdict.errors.iter().map(ToString::to_string).collect();
        info!(errors = verdict.errors.len(), "store denied");
        let mut denied = response.deny(format!("{what} is invalid: {}", detail.join("; ")));
        denied.result.code = 422;
        denied.result.reason = "Invalid".into();
        denied
    }
    .instrument(span)
    .await;
    metrics.admission(
        "validate",
        if response.allowed {
            "allowed"
        } else {
            "denied"
        },
        started.elapsed().as_secs_f64(),
    );
    Ok(response.into_review())
}
