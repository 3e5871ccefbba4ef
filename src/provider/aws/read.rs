//! Secrets Manager reads: keys checked before any call, `GetSecretValue`, or one
//! `BatchGetSecretValue` per 20 secrets when a fetch needs two or more unversioned secrets.

use std::collections::BTreeMap;

use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
use futures::future::join_all;

use super::errors::{classify_code, classify_sdk_error, Failure};
use crate::provider::{ProviderError, RemoteKey, RemoteSecret};
use crate::redact::SecretBytes;

/// `BatchGetSecretValue` takes at most 20 secret ids per call.
pub const BATCH_LIMIT: usize = 20;
/// A batch answer that keeps paginating past this is not trusted any further.
const MAX_BATCH_PAGES: usize = 5;

/// Read every key with `client`: unversioned keys through BatchGetSecretValue when there are
/// two or more of them, everything else (and anything a batch did not answer) through
/// GetSecretValue. On failure: the first failing key in `keys` order.
pub(super) async fn read_all(
    client: &aws_sdk_secretsmanager::Client,
    keys: &[RemoteKey],
) -> Result<Vec<RemoteSecret>, (String, Failure)> {
    let unversioned: Vec<&str> = keys
        .iter()
        .filter(|k| k.version.is_none())
        .map(|k| k.key.as_str())
        .collect();
    let mut batched: BTreeMap<&str, Result<RemoteSecret, Failure>> = BTreeMap::new();
    if unversioned.len() >= 2 {
        let chunks = join_all(
            unversioned
                .chunks(BATCH_LIMIT)
                .map(|chunk| batch_get(client, chunk)),
        )
        .await;
        for (chunk, answer) in unversioned.chunks(BATCH_LIMIT).zip(chunks) {
            match answer {
                Ok(found) => batched.extend(found),
                // The call itself was refused: most likely the role lacks
                // secretsmanager:BatchGetSecretValue (or a VPC endpoint policy denies one
                // secret). GetSecretValue on each key then works, or names the key at fault.
                Err(Failure {
                    error: ProviderError::PermissionDenied { .. },
                    stale_credentials: false,
                }) => {}
                // Throttled, unreachable, stale credentials: it concerns every key of the
                // chunk; report it on the first.
                Err(failure) => return Err((chunk[0].to_string(), failure)),
            }
        }
    }
    let singles = join_all(
        keys.iter()
            .filter(|k| !(k.version.is_none() && batched.contains_key(k.key.as_str())))
            .map(|k| async move { (k, get_one(client, k).await) }),
    )
    .await;
    let mut singles: BTreeMap<&RemoteKey, Result<RemoteSecret, Failure>> =
        singles.into_iter().collect();
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let result = match singles.remove(key) {
            Some(r) => r,
            None => batched
                .get(key.key.as_str())
                .cloned()
                .expect("every key is read by the batch or on its own"),
        };
        match result {
            Ok(v) => out.push(v),
            Err(f) => return Err((key.key.clone(), f)),
        }
    }
    Ok(out)
}

async fn get_one(
    client: &aws_sdk_secretsmanager::Client,
    key: &RemoteKey,
) -> Result<RemoteSecret, Failure> {
    let mut request = client.get_secret_value().secret_id(&key.key);
    match key.version.as_deref().map(classify_version) {
        Some(Version::Id(id)) => request = request.version_id(id),
        Some(Version::Stage(stage)) => request = request.version_stage(stage),
        None => {}
    }
    let output: GetSecretValueOutput = request.send().await.map_err(|e| classify_sdk_error(&e))?;
    into_remote(
        output.secret_string,
        output.secret_binary.map(|b| b.into_inner()),
    )
}

/// One BatchGetSecretValue call (plus its pages): the keys it answered, each with its value
/// or its per-secret error. Keys it says nothing about are absent (read on their own after).
async fn batch_get<'k>(
    client: &aws_sdk_secretsmanager::Client,
    ids: &[&'k str],
) -> Result<Vec<(&'k str, Result<RemoteSecret, Failure>)>, Failure> {
    let mut found: Vec<(&'k str, Result<RemoteSecret, Failure>)> = Vec::new();
    let mut next_token: Option<String> = None;
    for _ in 0..MAX_BATCH_PAGES {
        let output = client
            .batch_get_secret_value()
            .set_secret_id_list(Some(ids.iter().map(|s| s.to_string()).collect()))
            .set_next_token(next_token.take())
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        for entry in output.secret_values.unwrap_or_default() {
            let name = entry.name.as_deref().unwrap_or_default();
            let arn = entry.arn.as_deref().unwrap_or_default();
            let value = into_remote(
                entry.secret_string,
                entry.secret_binary.map(|b| b.into_inner()),
            );
            for id in ids.iter().filter(|id| matches_entry(id, name, arn)) {
                found.push((id, value.clone()));
            }
        }
        for error in output.errors.unwrap_or_default() {
            let Some(secret_id) = error.secret_id.as_deref() else {
                continue;
            };
            let failure =
                classify_code(None, error.error_code.as_deref(), error.message.as_deref());
            for id in ids.iter().filter(|id| **id == secret_id) {
                found.push((id, Err(failure.clone())));
            }
        }
        match output.next_token {
            Some(token) if !token.is_empty() => next_token = Some(token),
            _ => break,
        }
    }
    Ok(found)
}

/// Whether a requested id (a name, a full ARN, or an ARN without the random suffix) names
/// the batch entry with this name and ARN.
fn matches_entry(id: &str, name: &str, arn: &str) -> bool {
    if id.is_empty() {
        return false;
    }
    id == name
        || id == arn
        || arn
            .strip_prefix(id)
            .is_some_and(|rest| rest.len() == 7 && rest.starts_with('-'))
}

fn into_remote(string: Option<String>, binary: Option<Vec<u8>>) -> Result<RemoteSecret, Failure> {
    match (string, binary) {
        (Some(s), _) => Ok(RemoteSecret::Blob(SecretBytes::from_string(s))),
        (None, Some(b)) => Ok(RemoteSecret::Blob(SecretBytes::new(b))),
        (None, None) => Err(Failure {
            error: ProviderError::Backend {
                detail: "the secret version has neither a SecretString nor a SecretBinary".into(),
            },
            stale_credentials: false,
        }),
    }
}

/// `remoteRef.version` for Secrets Manager: a VersionId when it looks like one (UUID-shaped
/// 8-4-4-4-12, or 32–64 hex digits and dashes), else a VersionStage such as `AWSCURRENT`,
/// `AWSPREVIOUS` or a custom label. (The annotation grammar allows only letters, digits, `-`
/// and `_`, so ESO's `uuid/<id>` prefix cannot be written; the shape decides.)
#[derive(Debug, PartialEq, Eq)]
enum Version<'a> {
    Id(&'a str),
    Stage(&'a str),
}

fn classify_version(v: &str) -> Version<'_> {
    let uuid_shaped = v.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let hexish = (32..=64).contains(&v.len())
        && v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && v.bytes().any(|b| b.is_ascii_digit());
    if uuid_shaped || hexish {
        Version::Id(v)
    } else {
        Version::Stage(v)
    }
}

/// What a remote key must look like for Secrets Manager: a secret name or an ARN in the
/// store's region. Checked before any TokenRequest or connection.
pub(super) fn check_key(key: &RemoteKey, region: &str) -> Result<(), ProviderError> {
    let id = key.key.as_str();
    if let Some(rest) = id.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(6, ':').collect();
        let valid = parts.len() == 6
            && matches!(parts[0], "aws" | "aws-cn" | "aws-us-gov")
            && parts[1] == "secretsmanager"
            && parts[3].len() == 12
            && parts[3].bytes().all(|b| b.is_ascii_digit())
            && parts[4] == "secret"
            && !parts[5].is_empty();
        if !valid {
            return Err(ProviderError::InvalidRequest(format!(
                "{id:?} is not a Secrets Manager ARN \
                 (arn:aws:secretsmanager:<region>:<account>:secret:<name>)"
            )));
        }
        if parts[2] != region {
            return Err(ProviderError::InvalidRequest(format!(
                "the ARN is in region {} but the store reads from {region}; use a store for {}",
                parts[2], parts[2]
            )));
        }
    } else if id.len() > 512
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
    {
        return Err(ProviderError::InvalidRequest(format!(
            "{id:?} is not a Secrets Manager secret name (at most 512 of A-Z a-z 0-9 / _ + = . @ -) \
             or ARN"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use aws_sdk_secretsmanager::config::Credentials;

    use crate::metrics::Metrics;
    use crate::provider::aws::transport::{
        https_client, secrets_manager_client, MAX_ATTEMPTS, OPERATION_TIMEOUT,
    };
    use crate::provider::aws::AwsConfig;

    #[test]
    fn versions_are_ids_or_stages() {
        // The shape of AWS's own documentation example.
        let documented = "EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE";
        assert_eq!(classify_version(documented), Version::Id(documented));
        let uuid = "2d86cff8-4a38-4ffb-a757-3ec17b35740c";
        assert_eq!(classify_version(uuid), Version::Id(uuid));
        let hex = "0123456789abcdef0123456789abcdef";
        assert_eq!(classify_version(hex), Version::Id(hex));
        for stage in [
            "AWSCURRENT",
            "AWSPREVIOUS",
            "AWSPENDING",
            "blue",
            "v2",
            "deadbeef",
        ] {
            assert_eq!(classify_version(stage), Version::Stage(stage));
        }
        // All letters, no digit: a label, even when it is long and hex-looking.
        let letters = "abcdefabcdefabcdefabcdefabcdefab";
        assert_eq!(classify_version(letters), Version::Stage(letters));
    }

    #[test]
    fn keys_are_checked_before_any_call() {
        let key = |k: &str| RemoteKey {
            key: k.into(),
            version: None,
        };
        assert!(check_key(&key("payments/fraud-feed"), "eu-west-1").is_ok());
        assert!(check_key(&key("prod/db+creds@v=1.x_y"), "eu-west-1").is_ok());
        assert!(check_key(
            &key("arn:aws:secretsmanager:eu-west-1:123456789012:secret:payments/fraud-feed-AbCdEf"),
            "eu-west-1"
        )
        .is_ok());
        let e = check_key(
            &key("arn:aws:secretsmanager:us-east-1:123456789012:secret:x"),
            "eu-west-1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("region us-east-1"), "{e}");
        let e = check_key(&key("arn:aws:s3:::bucket"), "eu-west-1").unwrap_err();
        assert!(e.to_string().contains("not a Secrets Manager ARN"), "{e}");
        let e = check_key(&key("payments/fraud feed!"), "eu-west-1").unwrap_err();
        assert!(e.to_string().contains("secret name"), "{e}");
    }

    #[test]
    fn batch_entries_match_names_full_and_partial_arns() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:payments/feed-AbCdEf";
        assert!(matches_entry("payments/feed", "payments/feed", arn));
        assert!(matches_entry(arn, "payments/feed", arn));
        assert!(matches_entry(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:payments/feed",
            "payments/feed",
            arn
        ));
        assert!(!matches_entry("payments/fee", "payments/feed", arn));
        assert!(!matches_entry("", "", ""));
    }

    /// A loopback stand-in for Secrets Manager answering each call with the next canned
    /// response (the last one repeats) and counting calls per X-Amz-Target.
    struct FakeSecretsManager {
        url: String,
        calls: Arc<std::sync::Mutex<Vec<String>>>,
        _task: tokio::task::JoinHandle<()>,
    }

    impl FakeSecretsManager {
        async fn start(responses: Vec<(u16, &'static str)>) -> Self {
            let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
            let served = Arc::new(AtomicUsize::new(0));
            let recorded = calls.clone();
            let app = axum::Router::new().route(
                "/",
                axum::routing::post(move |headers: http::HeaderMap| {
                    let recorded = recorded.clone();
                    let served = served.clone();
                    let responses = responses.clone();
                    async move {
                        let target = headers
                            .get("x-amz-target")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        recorded.lock().unwrap().push(target);
                        let n = served.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = responses[n.min(responses.len() - 1)];
                        (
                            http::StatusCode::from_u16(status).unwrap(),
                            [("content-type", "application/x-amz-json-1.1")],
                            body,
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            Self {
                url,
                calls,
                _task: task,
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn client(&self, metrics: &Metrics) -> aws_sdk_secretsmanager::Client {
            let config = AwsConfig {
                region: "eu-west-1".into(),
                role: None,
                endpoint: Some(url::Url::parse(&self.url).unwrap()),
            };
            secrets_manager_client(
                https_client(),
                metrics,
                &config,
                Credentials::new("AKIDTEST", "test-secret", None, None, "test"),
            )
        }
    }

    fn key(k: &str) -> RemoteKey {
        RemoteKey {
            key: k.into(),
            version: None,
        }
    }

    const THROTTLED: (u16, &str) = (
        400,
        r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
    );

    #[tokio::test]
    async fn throttling_is_retried_with_backoff_then_reported() {
        let fake = FakeSecretsManager::start(vec![THROTTLED]).await;
        let metrics = Metrics::new();
        let client = fake.client(&metrics);
        let started = std::time::Instant::now();
        let (failed_key, failure) = read_all(&client, &[key("payments/fraud-feed")])
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(failed_key, "payments/fraud-feed");
        assert!(
            matches!(failure.error, ProviderError::Throttled { .. }),
            "{:?}",
            failure.error
        );
        assert!(failure.error.to_string().contains("Rate exceeded"));
        // Bounded: exactly MAX_ATTEMPTS calls, well inside the admission deadline.
        assert_eq!(fake.calls().len(), MAX_ATTEMPTS as usize);
        assert!(elapsed < OPERATION_TIMEOUT, "{elapsed:?}");
        let text = metrics.encode();
        assert!(
            text.contains(r#"secret_injector_backend_requests_total{provider="aws",operation="get_secret_value",result="throttled"} 3"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn throttling_that_clears_within_the_retries_succeeds() {
        let fake = FakeSecretsManager::start(vec![
            THROTTLED,
            (
                200,
                r#"{"Name":"payments/fraud-feed","SecretString":"plain-value"}"#,
            ),
        ])
        .await;
        let metrics = Metrics::new();
        let values = read_all(&fake.client(&metrics), &[key("payments/fraud-feed")])
            .await
            .unwrap();
        assert_eq!(fake.calls().len(), 2);
        let RemoteSecret::Blob(v) = &values[0] else {
            panic!("a blob")
        };
        assert_eq!(v.expose(), b"plain-value");
        let text = metrics.encode();
        assert!(
            text.contains(r#"operation="get_secret_value",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"operation="get_secret_value",result="throttled"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn batch_answers_values_binary_and_per_secret_errors_in_one_call() {
        let fake = FakeSecretsManager::start(vec![(
            200,
            r#"{"SecretValues":[
                {"Name":"a","ARN":"arn:aws:secretsmanager:eu-west-1:123456789012:secret:a-AbCdEf","SecretString":"{\"k\":\"v\"}"},
                {"Name":"bin","ARN":"arn:aws:secretsmanager:eu-west-1:123456789012:secret:bin-XyZ123","SecretBinary":"AAEC"}],
               "Errors":[{"SecretId":"gone","ErrorCode":"ResourceNotFoundException","Message":"Secrets Manager can't find the specified secret."}]}"#,
        )])
        .await;
        let metrics = Metrics::new();
        let client = fake.client(&metrics);
        let (failed, failure) = read_all(&client, &[key("a"), key("bin"), key("gone")])
            .await
            .unwrap_err();
        assert_eq!(failed, "gone");
        assert!(matches!(failure.error, ProviderError::NotFound { .. }));
        assert_eq!(fake.calls(), ["secretsmanager.BatchGetSecretValue"]);

        let values = read_all(&client, &[key("a"), key("bin")]).await.unwrap();
        let blobs: Vec<&[u8]> = values
            .iter()
            .map(|v| match v {
                RemoteSecret::Blob(b) => b.expose(),
                RemoteSecret::Fields(_) => panic!("blobs only"),
            })
            .collect();
        assert_eq!(blobs, [&br#"{"k":"v"}"#[..], &[0u8, 1, 2][..]]);
        assert_eq!(fake.calls().len(), 2);
        assert!(fake
            .calls()
            .iter()
            .all(|c| c == "secretsmanager.BatchGetSecretValue"));
    }

    #[tokio::test]
    async fn a_refused_batch_call_falls_back_to_one_read_per_key() {
        let fake = FakeSecretsManager::start(vec![
            (
                400,
                r#"{"__type":"AccessDeniedException","message":"not authorized to perform: secretsmanager:BatchGetSecretValue"}"#,
            ),
            (200, r#"{"Name":"a","SecretString":"one"}"#),
        ])
        .await;
        let metrics = Metrics::new();
        let values = read_all(&fake.client(&metrics), &[key("a"), key("b")])
            .await
            .unwrap();
        assert_eq!(values.len(), 2);
        let calls = fake.calls();
        assert_eq!(
            calls,
            [
                "secretsmanager.BatchGetSecretValue",
                "secretsmanager.GetSecretValue",
                "secretsmanager.GetSecretValue"
            ]
        );
        let text = metrics.encode();
        assert!(
            text.contains(r#"operation="batch_get_secret_value",result="error"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn batch_chunks_at_twenty_and_versioned_keys_are_read_alone() {
        let fake =
            FakeSecretsManager::start(vec![(200, r#"{"Name":"x","SecretString":"v"}"#)]).await;
        let metrics = Metrics::new();
        let client = fake.client(&metrics);
        // 21 unversioned keys ⇒ two batch calls; nothing in the answers matches, so each key
        // falls back to GetSecretValue, whose canned answer is a valid value.
        let mut keys: Vec<RemoteKey> = (0..21).map(|i| key(&format!("s{i:02}"))).collect();
        keys.push(RemoteKey {
            key: "s00".into(),
            version: Some("AWSPREVIOUS".into()),
        });
        let values = read_all(&client, &keys).await.unwrap();
        assert_eq!(values.len(), 22);
        let calls = fake.calls();
        let batches = calls
            .iter()
            .filter(|c| *c == "secretsmanager.BatchGetSecretValue")
            .count();
        assert_eq!(batches, 2, "{calls:?}");
    }
}
