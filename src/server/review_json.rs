//! The answer's bytes. An answer with a plain status (allowed, with or without a patch and
//! warnings) is written directly, a few hundred bytes into one buffer; any other answer (a
//! denial, an invalid review) goes through a `serde_json::Value` tree as it always has. Both
//! give the same bytes: keys sorted (as a `Value` holds them) and the patch in base64,
//! Kubernetes' wire format for `[]byte` (kube-core would write an array of numbers, about
//! four times larger).

use base64::Engine;
use kube::core::admission::{AdmissionResponse, AdmissionReview};
use kube::core::{DynamicObject, Status};

/// The review as JSON bytes.
pub fn review_json(review: &AdmissionReview<DynamicObject>) -> Result<Vec<u8>, serde_json::Error> {
    match plain_response(review) {
        Some(response) => Ok(write_plain(review, response)),
        None => through_value(review),
    }
}

/// The response, when it is the only thing in the review and its status carries nothing.
fn plain_response(review: &AdmissionReview<DynamicObject>) -> Option<&AdmissionResponse> {
    let response = review.response.as_ref()?;
    let plain = review.request.is_none()
        && response.result == Status::default()
        && response.audit_annotations.is_empty();
    plain.then_some(response)
}

fn write_plain(review: &AdmissionReview<DynamicObject>, response: &AdmissionResponse) -> Vec<u8> {
    let patch_len = response
        .patch
        .as_ref()
        .map_or(0, |p| base64::encoded_len(p.len(), true).unwrap_or(0));
    let mut out = Vec::with_capacity(160 + patch_len + response.uid.len());
    out.extend_from_slice(b"{\"apiVersion\":");
    json_str(&mut out, &review.types.api_version);
    out.extend_from_slice(b",\"kind\":");
    json_str(&mut out, &review.types.kind);
    out.extend_from_slice(b",\"response\":{\"allowed\":");
    out.extend_from_slice(if response.allowed { b"true" } else { b"false" });
    if let Some(patch) = &response.patch {
        // kube-core sets the patch and its type together (`with_patch`), the only way the
        // admission path sets either.
        debug_assert_eq!(
            serde_json::to_value(response).ok().and_then(|v| v
                .get("patchType")
                .and_then(|t| t.as_str().map(String::from))),
            Some("JSONPatch".to_string())
        );
        out.extend_from_slice(b",\"patch\":\"");
        let start = out.len();
        out.resize(start + patch_len, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(patch, &mut out[start..])
            .expect("sized by encoded_len");
        out.truncate(start + written);
        out.extend_from_slice(b"\",\"patchType\":\"JSONPatch\"");
    }
    out.extend_from_slice(b",\"status\":{},\"uid\":");
    json_str(&mut out, &response.uid);
    if let Some(warnings) = &response.warnings {
        out.extend_from_slice(b",\"warnings\":[");
        for (i, w) in warnings.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(&mut out, w);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"}}");
    out
}

/// A JSON string, escaped exactly as serde_json escapes it.
fn json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("a string always serialises into a Vec");
}

/// The general writer: the review as a `Value`, the patch's byte array swapped for base64.
fn through_value(review: &AdmissionReview<DynamicObject>) -> Result<Vec<u8>, serde_json::Error> {
    let mut value = serde_json::to_value(review)?;
    if let Some(bytes) = review.response.as_ref().and_then(|r| r.patch.as_ref()) {
        value["response"]["patch"] =
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    serde_json::to_vec(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionRequest;

    fn request() -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1 \"quoted\" \u{e9}\u{1}", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {}}
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    fn patch() -> json_patch::Patch {
        serde_json::from_value(serde_json::json!([
            {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "A"}}}},
            {"op": "add", "path": "/metadata/annotations/secret-injector.io~1status", "value": "injected"}
        ]))
        .unwrap()
    }

    #[test]
    fn direct_writer_matches_the_value_tree() {
        let req = request();
        let allowed = AdmissionResponse::from(&req);
        let mut warned = AdmissionResponse::from(&req).with_patch(patch()).unwrap();
        warned.warnings = Some(vec![
            "container \"app\" already defines env var K\n".into(),
            "é".into(),
        ]);
        let mut empty_warnings = AdmissionResponse::from(&req);
        empty_warnings.warnings = Some(Vec::new());
        let cases = [
            allowed.clone(),
            AdmissionResponse::from(&req).with_patch(patch()).unwrap(),
            warned,
            empty_warnings,
            allowed.clone().deny("no \"way\""),
            AdmissionResponse::invalid("the AdmissionReview carries no request"),
        ];
        for response in cases {
            let review = response.into_review();
            let direct = review_json(&review).unwrap();
            let tree = through_value(&review).unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(tree).unwrap()
            );
        }
        // The plain shape really was written directly.
        assert!(plain_response(&allowed.into_review()).is_some());
    }
}
