//! Lists: selection, ordering and `limit`/`continue` pagination.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::selectors::ObjectFilter;
use crate::status::{ApiError, ApiResult};
use crate::store::{ObjectKey, State};

impl State {
    pub(crate) fn matching(&self, filter: &ObjectFilter) -> Vec<Value> {
        self.bucket(filter.info)
            .map(|bucket| {
                bucket
                    .values()
                    .filter(|o| filter.matches(o))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn list(
        &self,
        filter: &ObjectFilter,
        limit: Option<usize>,
        continue_from: Option<ContinueToken>,
    ) -> Value {
        let info = filter.info;
        let (list_rv, start) = match continue_from {
            Some(token) => (token.rv, Some(token.start)),
            None => (self.rv, None),
        };
        let candidates: Vec<(&ObjectKey, &Value)> = self
            .bucket(info)
            .map(|bucket| {
                bucket
                    .iter()
                    .filter(|(key, _)| start.as_ref().is_none_or(|s| *key > s))
                    .filter(|(_, object)| filter.matches(object))
                    .collect()
            })
            .unwrap_or_default();
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        let take = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        if candidates.len() > take {
            let last = candidates[take - 1].0.clone();
            let token = ContinueToken {
                rv: list_rv,
                start: last,
            };
            metadata["continue"] = json!(token.encode());
            if filter.labels.is_empty() && filter.fields.is_empty() {
                metadata["remainingItemCount"] = json!(candidates.len() - take);
            }
        }
        let items: Vec<Value> = candidates
            .into_iter()
            .take(take)
            .map(|(_, o)| o.clone())
            .collect();
        json!({
            "kind": format!("{}List", info.kind),
            "apiVersion": info.api_version(),
            "metadata": metadata,
            "items": items,
        })
    }
}

/// The cursor of a paginated list: the list's resourceVersion and the last key returned.
pub(crate) struct ContinueToken {
    pub(crate) rv: u64,
    pub(crate) start: ObjectKey,
}

impl ContinueToken {
    pub(crate) fn encode(&self) -> String {
        let raw =
            json!({"v": "meta.k8s.io/v1", "rv": self.rv, "start": [self.start.0, self.start.1]});
        URL_SAFE_NO_PAD.encode(raw.to_string())
    }

    pub(crate) fn decode(token: &str) -> ApiResult<ContinueToken> {
        let invalid = || ApiError::bad_request(format!("continue key is not valid: {token}"));
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let value: Value = serde_json::from_slice(&raw).map_err(|_| invalid())?;
        let rv = value["rv"].as_u64().ok_or_else(invalid)?;
        let ns = value["start"][0].as_str().ok_or_else(invalid)?;
        let name = value["start"][1].as_str().ok_or_else(invalid)?;
        Ok(ContinueToken {
            rv,
            start: (ns.to_string(), name.to_string()),
        })
    }
}
