//! Logging setup for the binary.

use crate::config::LogFormat;

/// Install the tracing subscriber. Backend client libraries are silenced whatever the user's
/// filter says: their debug output can include request bodies.
pub fn init_tracing(format: LogFormat, filter: &str) {
    let mut env_filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for directive in [
        "rustify=off",
        "vaultrs=off",
        "reqwest=warn",
        "hyper=warn",
        "hyper_util=warn",
        "h2=warn",
        "rustls=warn",
        // The AWS SDK prints signed requests (access key id, session token) at debug/trace.
        "aws_smithy_runtime=off",
        "aws_smithy_runtime_api=off",
        "aws_smithy_http_client=off",
        "aws_sigv4=off",
        "aws_runtime=off",
        "aws_sdk_sts=off",
        "aws_sdk_secretsmanager=off",
    ] {
        env_filter = env_filter.add_directive(directive.parse().expect("static directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
