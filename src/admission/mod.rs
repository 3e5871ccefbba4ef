//! AdmissionReview in and out. Once a review parses, every answer is built from the request,
//! so its uid comes back; only a body that does not parse gets an HTTP 400.

pub mod error;
pub mod mutate;
pub mod review;
pub mod validate;

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status, TypeMeta};
use tracing::{debug, warn, Instrument};

use crate::context::Context;
use crate::pod::PodView;
use review::PodRequest;

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

/// The span of one review, `admission` with its uid, namespace, pod and dry-run flag. The
/// review runs in it at debug level, so an admission that goes well logs nothing at the default
/// level; a denial is logged in one at info level (without a parent), so its line carries the
/// review's fields at any level.
macro_rules! review_span {
    ($level:expr, $request:expr, $pod:expr) => {
        tracing::span!(
            parent: None,
            $level,
            "admission",
            uid = %$request.uid,
            namespace = $request.namespace.as_deref().unwrap_or(""),
            pod = %PodName($pod),
            dry_run = $request.dry_run,
        )
    };
}

/// The pod's name for the span, or its `generateName` followed by `*`.
struct PodName<'p, 'a>(Option<&'p PodView<'a>>);

impl std::fmt::Display for PodName<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pod) => f.write_str(&pod.display_name()),
            None => Ok(()),
        }
    }
}

/// Handle one body sent to `/mutate`.
pub async fn review_pod(
    ctx: &Context,
    body: &[u8],
) -> Result<AdmissionReview<DynamicObject>, BadRequest> {
    let started = Instant::now();
    if let Some(review) = review::read_fast(body) {
        return Ok(judge(ctx, &review.request, review.pod.as_ref(), started).await);
    }
    // Boxed: a typed `AdmissionRequest<Pod>` is ten kilobytes, which every review's future
    // would otherwise carry (and copy at each layer) to serve the rare ones that need it.
    Box::pin(review_typed(ctx, body, started)).await
}

/// The typed decoder: reviews the fast read leaves to it, with its own errors.
async fn review_typed(
    ctx: &Context,
    body: &[u8],
    started: Instant,
) -> Result<AdmissionReview<DynamicObject>, BadRequest> {
    let typed = match serde_json::from_slice::<AdmissionReview<Pod>>(body) {
        Ok(review) => TryInto::<AdmissionRequest<Pod>>::try_into(review).ok(),
        Err(pod_err) => return undecodable_pod(ctx, body, &pod_err, started),
    };
    let Some(req) = typed else {
        ctx.metrics()
            .admission("mutate", "invalid", started.elapsed().as_secs_f64());
        return Ok(
            AdmissionResponse::invalid("the AdmissionReview carries no request").into_review(),
        );
    };
    let pod = req.object.as_ref().map(PodView::of);
    Ok(judge(ctx, &PodRequest::of(&req), pod.as_ref(), started).await)
}

/// A body that is not an `AdmissionReview<Pod>`: if the envelope parses we still answer with
/// its uid (a pod create is denied naming where the pod stopped decoding).
fn undecodable_pod(
    ctx: &Context,
    body: &[u8],
    pod_err: &serde_json::Error,
    started: Instant,
) -> Result<AdmissionReview<DynamicObject>, BadRequest> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(|e| {
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
            AdmissionResponse::invalid("the AdmissionReview carries no request").into_review(),
        );
    };
    let request = PodRequest::of(&req);
    let response = allowed(&request);
    let response = if is_pod_create(&request) {
        ctx.metrics()
            .admission("mutate", "denied", started.elapsed().as_secs_f64());
        response.deny(format!(
            "the pod object could not be decoded ({})",
            json_error(pod_err)
        ))
    } else {
        ctx.metrics()
            .admission("mutate", "allowed", started.elapsed().as_secs_f64());
        response
    };
    Ok(response.into_review())
}

/// Answer a decoded review, timed and counted.
pub(crate) async fn judge(
    ctx: &Context,
    request: &PodRequest<'_>,
    pod: Option<&PodView<'_>>,
    started: Instant,
) -> AdmissionReview<DynamicObject> {
    let span = review_span!(tracing::Level::DEBUG, request, pod);
    let response = answer(ctx, request, pod).instrument(span).await;
    let result = if !response.allowed {
        "denied"
    } else if response.patch.is_some() {
        "patched"
    } else {
        "allowed"
    };
    ctx.metrics()
        .admission("mutate", result, started.elapsed().as_secs_f64());
    response.into_review()
}

pub(crate) async fn answer(
    ctx: &Context,
    request: &PodRequest<'_>,
    pod: Option<&PodView<'_>>,
) -> AdmissionResponse {
    let response = allowed(request);
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
                operations = m.patch.len(),
                warnings = %m.patch.warnings.join("; "),
                "pod injected"
            );
            if m.patch.is_empty() {
                return response;
            }
            if !request.dry_run {
                ctx.events().injected(namespace, pod, &m.owner, &m.secrets);
            }
            with_patch_bytes(response, m.patch.to_json())
        }
        Err(e) => {
            let message = e.denial_message();
            review_span!(tracing::Level::INFO, request, Some(pod))
                .in_scope(|| warn!(reason = e.kind(), message = %message, "pod denied"));
            if !request.dry_run {
                ctx.events().denied(namespace, pod, &message);
            }
            response.deny(message)
        }
    }
}

/// The answer `AdmissionResponse::from(&request)` gives (allowed, the review's types and the
/// uid echoed), made from the fields alone. kube-core builds it only from a whole
/// `AdmissionRequest`; `invalid` is the one other constructor, and every field it sets that
/// differs is set here.
fn allowed(request: &PodRequest<'_>) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid("");
    response.types = TypeMeta {
        api_version: request.review_api_version.to_string(),
        kind: request.review_kind.to_string(),
    };
    response.uid = request.uid.to_string();
    response.allowed = true;
    response.result = Status::default();
    response
}

/// The response carrying `patch` (the JSON of a JSON Patch), as `with_patch` would set it.
/// kube-core takes a patch only as `json_patch` operations, which it serialises itself; the
/// webhook writes its patch directly, so it hands kube-core an empty one (to set the patch
/// type, which has no setter) and puts its own bytes in its place.
fn with_patch_bytes(response: AdmissionResponse, patch: Vec<u8>) -> AdmissionResponse {
    match response.clone().with_patch(json_patch::Patch(Vec::new())) {
        Ok(mut patched) => {
            patched.patch = Some(patch);
            patched
        }
        Err(_) => response.deny("internal error: the patch could not be serialised"),
    }
}

fn is_pod_create(request: &PodRequest<'_>) -> bool {
    request.group.is_empty()
        && request.kind == "Pod"
        && request.operation == Operation::Create
        && request.sub_resource.as_deref().unwrap_or("").is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_is_kube_cores_answer_from_the_request() {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {}}
        }))
        .unwrap();
        let req: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
        assert_eq!(
            format!("{:?}", allowed(&PodRequest::of(&req))),
            format!("{:?}", AdmissionResponse::from(&req))
        );
    }
}
