//! The AWS half of the payments scenario, on moto: the IRSA role the payments ServiceAccount
//! is annotated with, an AWS store without a role of its own, the secrets and their sentinel
//! values; the AWS backend request counters; the log check for credentials and SDK tracing.

use serde_json::{json, Value};

use crate::moto::Moto;
use crate::payments::*;
use crate::webhook::Webhook;

/// The AWS SecretStore in [`NS`] (no role of its own: reads use the ServiceAccount's).
pub const STORE: &str = "aws-sm";
/// The IAM role the payments ServiceAccount is annotated with.
pub const ROLE: &str = "payments-irsa";
/// Values seeded in moto, which must never appear in a response, a patch or the log.
pub const LEDGER_TOKEN: &str = "ledger_SENTINEL_tok_3b9c";
pub const OLD_TOKEN: &str = "rotated_SENTINEL_old_51f0";
pub const NEW_TOKEN: &str = "rotated_SENTINEL_new_8a42";
pub const CERT_BYTES: &[u8] = &[0x30, 0x82, 0x00, 0xff, 0xfe, 0x01];
/// Every value the AWS tests look for where it must not appear (the Vault ones too).
pub const SENTINELS: [&str; 6] = [
    AWS_FEED_KEY,
    LEDGER_TOKEN,
    OLD_TOKEN,
    NEW_TOKEN,
    DB_USERNAME,
    DB_PASSWORD,
];

/// The payments rig and the moto server it is wired to.
pub struct AwsRig {
    pub rig: Rig,
    pub moto: Moto,
}

/// The payments rig (stand-in + OpenBao) plus moto with the AWS half of the story: the
/// payments ServiceAccount annotated with its IAM role, an AWS store without a role of its
/// own, and the secrets.
pub async fn aws_rig() -> AwsRig {
    let (rig, moto) = tokio::join!(Rig::start(), Moto::start());
    rig.seed_service_account(SA, Some(&Moto::role_arn(ROLE)));
    rig.seed_aws_store(STORE, &moto.url(), None);
    moto.create_secret(
        AWS_REGION,
        "payments/fraud-feed",
        &json!({"api_key": AWS_FEED_KEY, "endpoint": AWS_FEED_ENDPOINT}).to_string(),
    )
    .await;
    moto.create_secret(AWS_REGION, "payments/ledger-token", LEDGER_TOKEN)
        .await;
    moto.create_binary_secret(AWS_REGION, "payments/ledger-cert", CERT_BYTES)
        .await;
    AwsRig { rig, moto }
}

/// The AWS backend request counter for `operation` and `result` in a `/metrics` text;
/// 0 when the series is absent.
pub fn metric(metrics: &str, operation: &str, result: &str) -> u64 {
    let prefix = format!(
        r#"secret_injector_backend_requests_total{{provider="aws",operation="{operation}",result="{result}"}} "#
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

/// The raw bytes of a stored Secret's `key`.
pub fn raw_data(secret: &Value, key: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(secret["data"][key].as_str().unwrap())
        .unwrap()
}

/// Neither a token, nor moto's temporary credentials, nor any value reached the log.
pub fn assert_clean_log(webhook: &Webhook) {
    let logs = webhook.logs();
    assert_no_leak("webhook log", &logs, &SENTINELS);
    assert!(!logs.contains("eyJ"), "a JWT reached the log");
    // moto's temporary access keys start with ASIA, its session tokens with FQoGZXIvYXdz.
    if let Some(at) = logs.find("ASIA") {
        let start = logs[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = logs[at..].find('\n').map_or(logs.len(), |i| at + i);
        panic!("an access key id reached the log: {}", &logs[start..end]);
    }
    assert!(
        !logs.contains("FQoGZXIvYXdz"),
        "a session token reached the log"
    );
    // The SDK's own tracing (runtime components, signed requests) never reaches the log.
    let sdk_lines: Vec<&str> = logs.lines().filter(|l| l.contains("aws_smithy")).collect();
    assert!(
        sdk_lines.is_empty(),
        "AWS SDK tracing reached the log:\n{}",
        sdk_lines.join("\n")
    );
}
