//! Reading KV v1 and v2, and naming a wrong KV version when a read fails.

use std::collections::BTreeMap;

use vaultrs::error::ClientError;

use super::auth::Session;
use super::{classify, KvVersion, VaultConfig, VaultProvider};
use crate::provider::{json_field, ProviderError, RemoteKey, RemoteSecret};

/// A version asked of a KV v1 engine.
pub(super) fn unversioned_engine() -> ProviderError {
    ProviderError::InvalidRequest(
        "remoteRef.version is set but the store's KV engine is v1, which has no versions".into(),
    )
}

impl VaultProvider {
    pub(super) async fn read(
        &self,
        session: &Session,
        config: &VaultConfig,
        key: &RemoteKey,
    ) -> Result<RemoteSecret, ProviderError> {
        let result: Result<BTreeMap<String, serde_json::Value>, ClientError> =
            match (&config.kv, &key.version) {
                (KvVersion::V2, None) => {
                    vaultrs::kv2::read(&session.client, &config.mount, &key.key).await
                }
                (KvVersion::V2, Some(v)) => {
                    let version: u64 = v.parse().map_err(|_| {
                        ProviderError::InvalidRequest(format!(
                            "version {v:?} is not a KV v2 version number"
                        ))
                    })?;
                    vaultrs::kv2::read_version(&session.client, &config.mount, &key.key, version)
                        .await
                }
                (KvVersion::V1, None) => {
                    vaultrs::kv1::get(&session.client, &config.mount, &key.key).await
                }
                (KvVersion::V1, Some(_)) => return Err(unversioned_engine()),
            };
        match result {
            Ok(map) => {
                self.metrics.backend_call("vault", "read", "ok");
                Ok(RemoteSecret::Fields(
                    map.into_iter().map(|(k, v)| (k, json_field(v))).collect(),
                ))
            }
            Err(e) => {
                self.metrics.backend_call("vault", "read", "error");
                let err = classify(e);
                // A policy scoped to `<mount>/data/...` makes a wrong KV version look like a 403,
                // so both statuses get the mount diagnosis.
                if matches!(
                    err,
                    ProviderError::NotFound { .. } | ProviderError::PermissionDenied { .. }
                ) {
                    if let Some(mismatch) = diagnose_kv_version(session, config).await {
                        return Err(mismatch);
                    }
                }
                Err(err)
            }
        }
    }
}

/// After a 404 or 403, ask Vault which KV version the mount really is (the same lookup the
/// vault CLI does), so a wrong `version` in the store gets a precise message.
async fn diagnose_kv_version(session: &Session, config: &VaultConfig) -> Option<ProviderError> {
    #[derive(serde::Deserialize)]
    struct MountInfo {
        data: MountData,
    }
    #[derive(serde::Deserialize)]
    struct MountData {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        options: Option<BTreeMap<String, String>>,
    }
    let url = config
        .server
        .join(&format!("v1/sys/internal/ui/mounts/{}", config.mount))
        .ok()?;
    let mut request = session
        .client
        .http
        .http
        .get(url)
        .header("X-Vault-Token", session.client.middle.token.as_str())
        .header("X-Vault-Request", "true");
    if let Some(ns) = &config.namespace {
        request = request.header("X-Vault-Namespace", ns.as_str());
    }
    let info: MountInfo = request
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()?;
    if info.data.kind != "kv" {
        return None;
    }
    let actual = info
        .data
        .options
        .and_then(|o| o.get("version").cloned())
        .unwrap_or_else(|| "1".into());
    let actual = format!("v{}", actual.trim_start_matches('v'));
    (actual != config.kv.as_str()).then(|| ProviderError::KvVersionMismatch {
        mount: config.mount.clone(),
        configured: config.kv.as_str(),
        actual,
    })
}
