//! The composition root: builds the [`Context`] from the command line and runs everything —
//! the HTTPS and admin servers, the certificate reloader, leader election, the store status
//! loop and the refresher — until SIGTERM/SIGINT. Ready once the Kubernetes API answers and
//! the managed-Secret index has synced.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::ServeArgs;
use crate::context::{Context, ContextConfig};
use crate::managed::DigestKey;
use crate::metrics::Metrics;
use crate::redact::SecretBytes;
use crate::store::EndpointPolicy;
use crate::{events, leader, refresher, server, store};

/// Why `serve` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("reading the HMAC key {}", .path.display())]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the HMAC key in {} is shorter than 32 bytes", .0.display())]
    ShortKey(PathBuf),
    #[error("loading the serving certificate")]
    Certificate(#[source] server::tls::TlsError),
    #[error("loading --client-ca-file")]
    ClientCa(#[source] server::tls::TlsError),
    #[error("building the Kubernetes client (KUBECONFIG or in-cluster config)")]
    Client(#[source] kube::Error),
    #[error("binding {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{task} task: {message}")]
    Task { task: &'static str, message: String },
}

fn load_digest_key(args: &ServeArgs) -> Result<DigestKey, AppError> {
    match &args.hmac_key_file {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|source| AppError::ReadKey {
                path: path.clone(),
                source,
            })?;
            let trimmed: Vec<u8> = bytes.trim_ascii().to_vec();
            if trimmed.len() < 32 {
                return Err(AppError::ShortKey(path.clone()));
            }
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

fn endpoints(args: &ServeArgs) -> EndpointPolicy {
    EndpointPolicy {
        vault: args.allowed_vault_servers.0.clone(),
        aws: args.allowed_aws_endpoints.0.clone(),
    }
}

fn events_config(args: &ServeArgs) -> events::EventsConfig {
    let defaults = events::EventsConfig::default();
    events::EventsConfig {
        admission: args.admission_events,
        instance: args
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or(defaults.instance),
        limits: events::Limits {
            interval: args.event_aggregation_interval,
            ..defaults.limits
        },
        ..defaults
    }
}

/// `secret-injector serve`.
pub async fn run(args: ServeArgs) -> Result<(), AppError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Metrics::new();
    let digest_key = load_digest_key(&args)?;
    let cert = server::tls::ReloadingCert::load(args.tls_cert.clone(), args.tls_key.clone())
        .map_err(AppError::Certificate)?;
    let client_ca = match &args.client_ca_file {
        Some(path) => {
            Some(server::tls::ReloadingClientCa::load(path.clone()).map_err(AppError::ClientCa)?)
        }
        None => None,
    };
    let client = kube::Client::try_default()
        .await
        .map_err(AppError::Client)?;

    let ctx = Arc::new(Context::new(
        client.clone(),
        ContextConfig {
            deadline: args.admission_timeout,
            min_refresh_interval: args.min_refresh_interval,
            endpoints: endpoints(&args),
            reads_per_store: args.budgets.max_concurrent_reads_per_store as usize,
            cold_admissions: args.budgets.cold_admissions(),
            events: events_config(&args),
            ..ContextConfig::default()
        },
        metrics.clone(),
        digest_key,
    ));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));

    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind { addr, source })
    };
    let https = bind(args.listen).await?;
    let admin = bind(args.admin_listen).await?;
    info!(
        listen = %https.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "secret-injector serving"
    );

    cert.spawn_reloader(args.tls_reload_interval, shutdown_rx.clone());
    if let Some(ca) = &client_ca {
        ca.spawn_reloader(args.tls_reload_interval, shutdown_rx.clone());
    }
    let https_task = tokio::spawn(server::serve_tls(
        https,
        cert.server_config(client_ca),
        server::router_with_limits(ctx.clone(), &args.limits),
        args.limits.clone(),
        shutdown_rx.clone(),
    ));
    let admin_task = tokio::spawn(server::serve_plain(
        admin,
        server::admin_router(metrics, ready.clone()),
        shutdown_rx.clone(),
    ));
    tokio::spawn(become_ready(
        ctx.clone(),
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
    let leading = leader::spawn(
        client.clone(),
        leader::LeaderConfig {
            namespace: args.leader_election_namespace.clone(),
            lease_name: leader::LEASE_NAME.into(),
            identity: identity.clone(),
            lease_duration: args.lease_duration,
        },
        shutdown_rx.clone(),
    );
    let status_task = tokio::spawn(store::status::run(
        store::status::StatusContext {
            client: client.clone(),
            endpoints: endpoints(&args),
            interval: args.store_check_interval,
        },
        leading.clone(),
        shutdown_rx.clone(),
    ));
    let refresher_task = tokio::spawn(refresher::run(
        ctx.clone(),
        refresher::RefresherConfig {
            concurrency: args.refresh_concurrency,
            rollout_debounce: args.rollout_debounce,
            orphan_grace: args.orphan_grace_period,
            identity,
            min_interval: args.min_refresh_interval,
        },
        leading.clone(),
        shutdown_rx.clone(),
    ));

    let detector_task = tokio::spawn(events::detector::run(
        client.clone(),
        ctx.events().clone(),
        ctx.metrics().clone(),
        events::detector::DetectorConfig {
            period: args.missed_injection_check_interval,
            excluded_namespaces: vec![
                args.leader_election_namespace.clone(),
                "kube-system".into(),
                "kube-node-lease".into(),
            ],
        },
        leading.clone(),
        shutdown_rx.clone(),
    ));

    server::shutdown::on_signal_drain_then_stop(&ready, args.limits.shutdown_drain, &shutdown_tx)
        .await;
    let _ = status_task.await;
    let _ = refresher_task.await;
    let _ = detector_task.await;
    join("HTTPS server", https_task).await?;
    join("admin server", admin_task).await
}

async fn join<E: std::fmt::Display>(
    task: &'static str,
    handle: tokio::task::JoinHandle<Result<(), E>>,
) -> Result<(), AppError> {
    match handle.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AppError::Task {
            task,
            message: e.to_string(),
        }),
        Err(e) => Err(AppError::Task {
            task,
            message: e.to_string(),
        }),
    }
}

/// Ready once the API server answers (until then every admission would fail anyway) and the
/// managed-Secret index has synced (until then warm admissions would miss it).
async fn become_ready(
    ctx: Arc<Context>,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        match ctx.client().apiserver_version().await {
            Ok(_) => break,
            Err(e) => warn!(error = %e, "Kubernetes API not reachable yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    tokio::select! {
        _ = ctx.managed_index().wait_until_synced() => {}
        _ = shutdown.changed() => return,
    }
    ready.store(true, Ordering::Relaxed);
    info!("Kubernetes API reachable and managed Secrets indexed; ready");
}
