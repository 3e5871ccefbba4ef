//! secret-injector: a mutating admission webhook that injects secrets from Vault/OpenBao
//! (and AWS Secrets Manager) into pods through managed Kubernetes Secrets, fetched with the
//! pod's own ServiceAccount identity.
//!
//! Data flows one way: review → spec → store → identity → fetch → managed Secret → patch.

pub mod admission;
pub mod cache;
pub mod certs;
pub mod config;
pub mod fetch;
pub mod identity;
pub mod leader;
pub mod managed;
pub mod metrics;
pub mod patch;
pub mod plan;
pub mod provider;
pub mod redact;
pub mod refresher;
pub mod render;
pub mod server;
pub mod spec;
pub mod store;
pub mod workload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};

use crate::admission::{Injector, InjectorConfig};
use crate::config::{LogFormat, ServeArgs};
use crate::managed::DigestKey;
use crate::metrics::Metrics;
use crate::redact::SecretBytes;
use crate::store::EndpointPolicy;

/// A Kubernetes API error as a user should read it: the API server's message and code, not
/// a debug dump of the Status object.
pub fn api_error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                "no message"
            } else {
                status.message.as_str()
            };
            if status.reason.is_empty() {
                format!("{message} (HTTP {})", status.code)
            } else {
                format!("{message} (HTTP {} {})", status.code, status.reason)
            }
        }
        other => redact::scrub(&other.to_string()),
    }
}

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

fn load_digest_key(args: &ServeArgs) -> anyhow::Result<DigestKey> {
    match &args.hmac_key_file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the HMAC key {}", path.display()))?;
            let trimmed: Vec<u8> = bytes.trim_ascii().to_vec();
            anyhow::ensure!(
                trimmed.len() >= 32,
                "the HMAC key in {} is shorter than 32 bytes",
                path.display()
            );
            Ok(DigestKey::new(SecretBytes::new(trimmed)))
        }
        None => {
            warn!(
                "no --hmac-key-file: using a random HMAC key; recorded digests change on restart"
            );
            Ok(DigestKey::random())
        }
    }
}

/// `secret-injector serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Metrics::new();
    let digest_key = load_digest_key(&args)?;
    let cert = server::tls::ReloadingCert::load(args.tls_cert.clone(), args.tls_key.clone())
        .context("loading the serving certificate")?;
    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client (KUBECONFIG or in-cluster config)")?;

    let injector: Arc<Injector> = Arc::new(Injector::new(
        client.clone(),
        InjectorConfig {
            deadline: args.admission_timeout,
            min_refresh_interval: args.min_refresh_interval,
            endpoints: EndpointPolicy {
                vault: args.allowed_vault_servers.0.clone(),
                aws: args.allowed_aws_endpoints.0.clone(),
            },
            ..InjectorConfig::default()
        },
        metrics.clone(),
        digest_key,
    ));

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    spawn_managed_index(&client, &injector, shutdown_rx.clone());
    let ready = Arc::new(AtomicBool::new(false));

    let https = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding {}", args.admin_listen))?;
    info!(listen = %https.local_addr()?, admin = %admin.local_addr()?, "secret-injector serving");

    cert.spawn_reloader(args.tls_reload_interval, shutdown_rx.clone());
    let https_task = tokio::spawn(server::serve_tls(
        https,
        cert.server_config(),
        server::router(injector.clone()),
        shutdown_rx.clone(),
    ));
    let admin_task = tokio::spawn(server::serve_plain(
        admin,
        server::admin_router(metrics, ready.clone()),
        shutdown_rx.clone(),
    ));
    // Ready once the API server answers: until then every admission would fail anyway.
    tokio::spawn(wait_for_api(
        client.clone(),
        ready.clone(),
        shutdown_rx.clone(),
    ));

    // Background work runs on one replica at a time.
    let identity = args
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "secret-injector".into());
    let identity = format!("{identity}-{:08x}", rand::random::<u32>());
    let refresher_identity = identity.clone();
    let leading = leader::spawn(
        client.clone(),
        leader::LeaderConfig {
            namespace: args.leader_election_namespace.clone(),
            lease_name: leader::LEASE_NAME.into(),
            identity,
            lease_duration: args.lease_duration,
        },
        shutdown_rx.clone(),
    );
    let status_task = tokio::spawn(store::status::run(
        store::status::StatusContext {
            client: client.clone(),
            endpoints: EndpointPolicy {
                vault: args.allowed_vault_servers.0.clone(),
                aws: args.allowed_aws_endpoints.0.clone(),
            },
            interval: args.store_check_interval,
        },
        leading.clone(),
        shutdown_rx.clone(),
    ));
    let refresher_task = tokio::spawn(refresher::run(
        injector.clone(),
        refresher::RefresherConfig {
            concurrency: args.refresh_concurrency,
            rollout_debounce: args.rollout_debounce,
            orphan_grace: args.orphan_grace_period,
            identity: refresher_identity,
            min_interval: args.min_refresh_interval,
        },
        leading,
        shutdown_rx.clone(),
    ));

    shutdown_signal().await;
    info!("shutting down");
    ready.store(false, Ordering::Relaxed);
    let _ = shutdown_tx.send(true);
    let _ = status_task.await;
    let _ = refresher_task.await;
    https_task.await.context("HTTPS server task")??;
    admin_task.await.context("admin server task")??;
    Ok(())
}

/// Every replica watches the managed Secrets (label-selected, metadata only, managedFields
/// dropped) so warm admissions are answered from memory.
fn spawn_managed_index(
    client: &kube::Client,
    injector: &Arc<Injector>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use futures::StreamExt;
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    let (reader, writer) = reflector::store();
    let api = kube::Api::<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>>::all(
        client.clone(),
    );
    let selector = format!("{}={}", managed::LABEL_MANAGED_BY, managed::MANAGED_BY);
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default().labels(&selector))
            .default_backoff()
            .modify(|o| o.metadata.managed_fields = None),
    );
    let _ = injector.managed_index.set(reader);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                next = stream.next() => match next {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => warn!(error = %e, "managed Secret watch error; retrying"),
                    None => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    });
}

async fn wait_for_api(
    client: kube::Client,
    ready: Arc<AtomicBool>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        match client.apiserver_version().await {
            Ok(_) => {
                ready.store(true, Ordering::Relaxed);
                info!("Kubernetes API reachable; ready");
                return;
            }
            Err(e) => warn!(error = %e, "Kubernetes API not reachable yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
