//! AdmissionReview in and out. Once a review parses, every answer is built from the request,
//! so its uid comes back; only a body that does not parse gets an HTTP 400.

pub mod error;
pub mod mutate;
pub mod validate;

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use tracing::{debug, warn, Instrument};

use crate::context::Context;

/// A body that is not an AdmissionReview at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Describe a JSON error by kind and position only: serde's messages can quote input, and
/// the input is a pod spec that may carry its own sensitive values.
pub(crate) fn json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected structure",
        serde_json::error::Category::Eof => "unexpected end of input",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

/// Handle one body sent to `/mutate`.
pub async fn review_pod(
    ctx: &Context,
    body: &[u8],
) -> Result<AdmissionReview<DynamicObject>, BadRequest> {
    let started = Instant::now();
    let (request, pod) = match serde_json::from_slice::<AdmissionReview<Pod>>(body) {
        Ok(review) => match TryInto::<AdmissionRequest<Pod>>::try_into(review) {
            Ok(mut req) => {
                // Moved out, not cloned: the pod is most of the review.
                let pod = req.object.take();
                (generic_request(&req), pod)
            }
            Err(_) => {
                ctx.metrics()
                    .admission("mutate", "invalid", started.elapsed().as_secs_f64());
                return Ok(
                    AdmissionResponse::invalid("the AdmissionReview carries no request")
                        .into_review(),
                );
            }
        },
        Err(pod_err) => {
            // Not a pod we can decode; if the envelope parses we still answer with its uid.
            let review: AdmissionReview<DynamicObject> =
                serde_json::from_slice(body).map_err(|e| {
                    ctx.metrics()
                        .admission("mutate", "invalid", started.elapsed().as_secs_f64());
                    BadRequest(format!(
                        "body is not an admission.k8s.io/v1 AdmissionReview ({})",
                        json_error(&e)
                    ))
                })?;
            let Ok(req) = TryInto::<AdmissionRequest<DynamicObject>>::try_into(review) else {
                ctx.metrics()
                    .admission("mutate", "invalid", started.elapsed().as_secs_f64());
                return Ok(
                    AdmissionResponse::invalid("the AdmissionReview carries no request")
                        .into_review(),
                );
            };
            let response = AdmissionResponse::from(&req);
            let response = if is_pod_create(&req) {
                ctx.metrics()
                    .admission("mutate", "denied", started.elapsed().as_secs_f64());
                response.deny(format!(
                    "the pod object could not be decoded ({})",
                    json_error(&pod_err)
                ))
            } else {
                ctx.metrics()
                    .admission("mutate", "allowed", started.elapsed().as_secs_f64());
                response
            };
            return Ok(response.into_review());
        }
    };

    let span = tracing::info_span!(
        "admission",
        uid = %request.uid,
        namespace = request.namespace.as_deref().unwrap_or(""),
        pod = %pod_display_name(pod.as_ref()),
        dry_run = request.dry_run,
    );
    let response = answer(ctx, &request, pod.as_ref()).instrument(span).await;
    let result = if !response.allowed {
        "denied"
    } else if response.patch.is_some() {
        "patched"
    } else {
        "allowed"
    };
    ctx.metrics()
        .admission("mutate", result, started.elapsed().as_secs_f64());
    Ok(response.into_review())
}

async fn answer(
    ctx: &Context,
    request: &AdmissionRequest<DynamicObject>,
    pod: Option<&Pod>,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    // Only pod CREATE is ever mutated; anything else the API server sends us is let through.
    if !is_pod_create(request) {
        return response;
    }
    let Some(pod) = pod else {
        return response.deny(error::InjectError::NoObject.denial_message());
    };
    let Some(namespace) = request.namespace.as_deref().filter(|n| !n.is_empty()) else {
        return response.deny(error::InjectError::NoNamespace.denial_message());
    };
    match mutate::mutate(ctx, pod, namespace, request.dry_run).await {
        Ok(None) => response,
        Ok(Some(m)) => {
            let mut response = response;
            if !m.patch.warnings.is_empty() {
                response.warnings = Some(m.patch.warnings.clone());
            }
            // Debug, not info: one JSON line per admission costs more than the rest of a warm
            // answer (see README, Logging). Denials stay at warn.
            debug!(
                secrets = %m.secrets.join(","),
                operations = m.patch.ops.len(),
                warnings = %m.patch.warnings.join("; "),
                "pod injected"
            );
            if m.patch.ops.is_empty() {
                return response;
            }
            if !request.dry_run {
                ctx.events().injected(namespace, pod, &m.owner, &m.secrets);
            }
            match response.clone().with_patch(json_patch::Patch(m.patch.ops)) {
                Ok(r) => r,
                Err(_) => response.deny("internal error: the patch could not be serialised"),
            }
        }
        Err(e) => {
            let message = e.denial_message();
            warn!(reason = e.kind(), message = %message, "pod denied");
            if !request.dry_run {
                ctx.events().denied(namespace, pod, &message);
            }
            response.deny(message)
        }
    }
}

fn is_pod_create(request: &AdmissionRequest<DynamicObject>) -> bool {
    request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.operation == Operation::Create
        && request.sub_resource.as_deref().unwrap_or("").is_empty()
}

fn pod_display_name(pod: Option<&Pod>) -> String {
    let Some(pod) = pod else { return String::new() };
    pod.metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.as_ref().map(|g| format!("{g}*")))
        .unwrap_or_default()
}

/// The request without its typed object, for answers and the kind/operation checks.
fn generic_request(req: &AdmissionRequest<Pod>) -> AdmissionRequest<DynamicObject> {
    AdmissionRequest {
        types: req.types.clone(),
        uid: req.uid.clone(),
        kind: req.kind.clone(),
        resource: req.resource.clone(),
        sub_resource: req.sub_resource.clone(),
        request_kind: req.request_kind.clone(),
        request_resource: req.request_resource.clone(),
        request_sub_resource: req.request_sub_resource.clone(),
        name: req.name.clone(),
        namespace: req.namespace.clone(),
        operation: req.operation.clone(),
        user_info: req.user_info.clone(),
        object: None,
        old_object: None,
        dry_run: req.dry_run,
        options: req.options.clone(),
    }
}
