//! Command line: clap derive, every flag also from `SECRET_INJECTOR_<FLAG>`, validated once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::store::EndpointPattern;

#[derive(Parser, Debug)]
#[command(
    name = "secret-injector",
    version,
    about = "Injects secrets from Vault/OpenBao and AWS Secrets Manager into pods, using the pod's own identity"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the admission webhook.
    Serve(Box<ServeArgs>),
    /// Create a CA and a serving certificate for the webhook Service and write the caBundle
    /// into the webhook configurations.
    Certs(CertsArgs),
    /// Print the SecretStore and ClusterSecretStore CRDs as YAML.
    Crds,
    /// Check manifests offline: the managed Secrets and pod patch each workload would get, or
    /// the webhook's denial. Contacts no cluster and no backend.
    Render(RenderArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// HTTPS address for /mutate.
    #[arg(long, env = "SECRET_INJECTOR_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain for the HTTPS listener (re-read when it changes).
    #[arg(long, env = "SECRET_INJECTOR_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key for the HTTPS listener.
    #[arg(long, env = "SECRET_INJECTOR_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "SECRET_INJECTOR_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_listen: SocketAddr,
    /// Internal deadline for one admission; keep it below the webhook's timeoutSeconds (10s).
    #[arg(long, env = "SECRET_INJECTOR_ADMISSION_TIMEOUT", default_value = "8s", value_parser = parse_deadline)]
    pub admission_timeout: Duration,
    /// Refuse refresh intervals shorter than this (0 = fetch once is always allowed).
    #[arg(long, env = "SECRET_INJECTOR_MIN_REFRESH_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub min_refresh_interval: Duration,
    /// File with the key for the HMAC digests recorded on managed Secrets (at least 32 bytes).
    /// Without it a random key is used, and digests change when the process restarts.
    #[arg(long, env = "SECRET_INJECTOR_HMAC_KEY_FILE")]
    pub hmac_key_file: Option<PathBuf>,
    /// How often the serving certificate files are checked for changes.
    #[arg(long, env = "SECRET_INJECTOR_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_positive)]
    pub tls_reload_interval: Duration,
    /// Vault/OpenBao servers a store may name: comma-separated `scheme://host[:port]` patterns;
    /// `*.` wildcards leading labels, `:*` any port, no port = the scheme's default. Empty: none.
    #[arg(long, env = "SECRET_INJECTOR_ALLOWED_VAULT_SERVERS", default_value = "", value_parser = parse_endpoints)]
    pub allowed_vault_servers: EndpointList,
    /// AWS endpoints a store may name in `endpoint` (same pattern syntax).
    #[arg(long, env = "SECRET_INJECTOR_ALLOWED_AWS_ENDPOINTS", default_value = crate::store::DEFAULT_AWS_ENDPOINTS, value_parser = parse_endpoints)]
    pub allowed_aws_endpoints: EndpointList,
    /// Namespace of the leader-election Lease (the webhook's own namespace).
    #[arg(
        long,
        env = "SECRET_INJECTOR_LEADER_ELECTION_NAMESPACE",
        default_value = "secret-injector"
    )]
    pub leader_election_namespace: String,
    /// This replica's identity in the Lease (the pod name); defaults to the hostname.
    #[arg(long, env = "SECRET_INJECTOR_POD_NAME")]
    pub pod_name: Option<String>,
    /// How long a leader's Lease lasts without renewal before another replica takes over.
    #[arg(long, env = "SECRET_INJECTOR_LEASE_DURATION", default_value = "15s", value_parser = parse_positive)]
    pub lease_duration: Duration,
    /// How often the leader re-checks every store's Ready condition (reachability probe).
    #[arg(long, env = "SECRET_INJECTOR_STORE_CHECK_INTERVAL", default_value = "1m", value_parser = parse_positive)]
    pub store_check_interval: Duration,
    /// Managed Secrets refreshed concurrently by the leader.
    #[arg(long, env = "SECRET_INJECTOR_REFRESH_CONCURRENCY", default_value_t = 8)]
    pub refresh_concurrency: usize,
    /// Changes to one workload's Secrets within this window cause a single rollout.
    #[arg(long, env = "SECRET_INJECTOR_ROLLOUT_DEBOUNCE", default_value = "5s", value_parser = parse_interval)]
    pub rollout_debounce: Duration,
    /// A bare pod's managed Secret is deleted once no pod of that name exists and the Secret is
    /// older than this (pods still being created keep theirs).
    #[arg(long, env = "SECRET_INJECTOR_ORPHAN_GRACE_PERIOD", default_value = "10m", value_parser = parse_interval)]
    pub orphan_grace_period: Duration,
    /// Publish `Injected`/`InjectionDenied` Events on the pod's workload for each admission
    /// (aggregated, off the admission path; never on dry-run).
    #[arg(long, env = "SECRET_INJECTOR_ADMISSION_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub admission_events: bool,
    /// Repeats of one Event (same object, reason and message) raise its count at most this
    /// often; the first occurrence is written at once.
    #[arg(long, env = "SECRET_INJECTOR_EVENT_AGGREGATION_INTERVAL", default_value = "1m", value_parser = parse_positive)]
    pub event_aggregation_interval: Duration,
    /// How often the leader's missed-injection detector judges the pods it has seen; 0 turns
    /// the detector off.
    #[arg(long, env = "SECRET_INJECTOR_MISSED_INJECTION_CHECK_INTERVAL", default_value = "1m", value_parser = parse_interval)]
    pub missed_injection_check_interval: Duration,
    /// PEM CA bundle: when set, the HTTPS listener requires a client certificate signed by it
    /// (the API server's, configured with an AdmissionConfiguration webhook kubeconfig) and
    /// refuses other callers during the TLS handshake. Re-read with the serving certificate.
    /// Leave unset on control planes that cannot present one (EKS, GKE, AKS).
    #[arg(long, env = "SECRET_INJECTOR_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Server limits (timeouts, connection and concurrency caps, body and HTTP/2 limits).
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Budgets towards the secret backends (per store, per namespace).
    #[command(flatten)]
    pub budgets: BudgetArgs,
    /// Log format.
    #[arg(long, env = "SECRET_INJECTOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax). Backend client libraries are always kept quiet.
    #[arg(long, env = "SECRET_INJECTOR_LOG", default_value = "info")]
    pub log: String,
}

/// Limits of the HTTPS listener. Defaults fit one API server replica set calling over
/// HTTP/2 and keep memory under the Deployment's 128 MiB limit under hostile load; see
/// docs/security.md ("Server limits").
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Open HTTPS connections at most; further connections are closed as soon as they are
    /// accepted (never queued).
    #[arg(long, env = "SECRET_INJECTOR_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// A TLS handshake must finish within this.
    #[arg(long, env = "SECRET_INJECTOR_TLS_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_positive)]
    pub tls_handshake_timeout: Duration,
    /// HTTP/1 request headers must arrive within this (also closes idle HTTP/1 keep-alive
    /// connections after this long).
    #[arg(long, env = "SECRET_INJECTOR_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = parse_positive)]
    pub header_read_timeout: Duration,
    /// A request body must arrive within this once its review has a slot.
    #[arg(long, env = "SECRET_INJECTOR_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_positive)]
    pub body_read_timeout: Duration,
    /// A connection (HTTP/1 or HTTP/2) with no request in flight for this long is closed
    /// gracefully (HTTP/2 GOAWAY).
    #[arg(long, env = "SECRET_INJECTOR_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_positive)]
    pub idle_timeout: Duration,
    /// Reviews (/mutate and /validate together) processed at once. Bodies are read only once a
    /// review has a slot, so this also bounds the request bytes held in memory.
    #[arg(long, env = "SECRET_INJECTOR_MAX_CONCURRENT_REVIEWS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_reviews: u32,
    /// How long a review waits for a slot before the answer is HTTP 429 with Retry-After.
    #[arg(long, env = "SECRET_INJECTOR_OVERLOAD_WAIT", default_value = "1s", value_parser = parse_interval)]
    pub overload_wait: Duration,
    /// Largest request body accepted (bytes, or with a KiB/MiB suffix). A pod is at most
    /// 1.5 MiB (etcd's request limit) and a CREATE review carries it once; an UPDATE carries
    /// object and oldObject, so 3 MiB fits the largest review the API server can send.
    #[arg(long, env = "SECRET_INJECTOR_MAX_REQUEST_BODY", default_value = "3MiB", value_parser = parse_size)]
    pub max_request_body: usize,
    /// Estimated memory one review may take once decoded (bytes, or KiB/MiB). The estimate
    /// is the body size plus a fixed cost per JSON object and string (typed decoding turns a
    /// 12-byte `{"name":""}` into a struct of a kilobyte or more); a review over it is refused
    /// with 413 before it is decoded. Real pods are far below it: the cap stops reviews built
    /// to amplify memory.
    #[arg(long, env = "SECRET_INJECTOR_MAX_REVIEW_MEMORY", default_value = "32MiB", value_parser = parse_size)]
    pub max_review_memory: usize,
    /// Estimated decoded memory of all reviews in progress together; a review that does not
    /// fit waits (up to --overload-wait) like one without a slot. With the process's own
    /// ~40 MiB this keeps it under the Deployment's 128 MiB limit.
    #[arg(long, env = "SECRET_INJECTOR_REVIEW_MEMORY_BUDGET", default_value = "64MiB", value_parser = parse_size)]
    pub review_memory_budget: usize,
    /// HTTP/2 flow-control window per stream and per connection: how much unread request body
    /// a connection may push at the server (bounds memory across --max-connections).
    #[arg(long, env = "SECRET_INJECTOR_HTTP2_WINDOW", default_value = "64KiB", value_parser = parse_size)]
    pub http2_window: usize,
    /// HTTP/2 streams (concurrent requests) per connection.
    #[arg(
        long,
        env = "SECRET_INJECTOR_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = 32
    )]
    pub http2_max_concurrent_streams: u32,
    /// Largest request header block (HTTP/2 header list; HTTP/1 read buffer), bytes or
    /// KiB/MiB.
    #[arg(long, env = "SECRET_INJECTOR_MAX_HEADER_SIZE", default_value = "64KiB", value_parser = parse_size)]
    pub max_header_size: usize,
    /// HTTP/2 keep-alive PING interval; a peer that does not answer within
    /// --http2-keepalive-timeout is disconnected.
    #[arg(long, env = "SECRET_INJECTOR_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_positive)]
    pub http2_keepalive_interval: Duration,
    /// See --http2-keepalive-interval.
    #[arg(long, env = "SECRET_INJECTOR_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_positive)]
    pub http2_keepalive_timeout: Duration,
    /// On SIGTERM, readiness turns false at once and the server keeps serving this long, so
    /// the endpoint is removed before the listener closes. Together with the Deployment's
    /// preStop sleep and --shutdown-timeout it must fit terminationGracePeriodSeconds.
    #[arg(long, env = "SECRET_INJECTOR_SHUTDOWN_DRAIN", default_value = "5s", value_parser = parse_interval)]
    pub shutdown_drain: Duration,
    /// After the drain, how long in-flight reviews may take to finish before connections are
    /// cut.
    #[arg(long, env = "SECRET_INJECTOR_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_positive)]
    pub shutdown_timeout: Duration,
}

/// Budgets that keep one pod or one tenant from exhausting a secret backend for the others;
/// see docs/security.md ("Budgets").
#[derive(Args, Debug, Clone)]
pub struct BudgetArgs {
    /// Backend requests in flight per store (SecretStore by namespace and name,
    /// ClusterSecretStore by name), across all admissions and refreshes of this replica. A pod
    /// with more keys reads them in chunks of this size.
    #[arg(long, env = "SECRET_INJECTOR_MAX_CONCURRENT_READS_PER_STORE", default_value_t = crate::provider::limit::DEFAULT_READS_PER_STORE as u32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent_reads_per_store: u32,
    /// Cold admissions (pods whose managed Secret must be fetched) per second per namespace,
    /// refilling a bucket of --cold-admissions-burst; warm admissions are free. 0 turns the
    /// limit off. Over it a pod is denied and its controller retries.
    #[arg(long, env = "SECRET_INJECTOR_COLD_ADMISSIONS_PER_NAMESPACE", default_value_t = crate::budget::ColdAdmissionLimit::default().per_second, value_parser = parse_rate)]
    pub cold_admissions_per_namespace: f64,
    /// Cold admissions a quiet namespace may make at once (the bucket size).
    #[arg(long, env = "SECRET_INJECTOR_COLD_ADMISSIONS_BURST", default_value_t = crate::budget::ColdAdmissionLimit::default().burst, value_parser = clap::value_parser!(u32).range(1..))]
    pub cold_admissions_burst: u32,
}

impl BudgetArgs {
    pub fn cold_admissions(&self) -> crate::budget::ColdAdmissionLimit {
        crate::budget::ColdAdmissionLimit {
            per_second: self.cold_admissions_per_namespace,
            burst: self.cold_admissions_burst,
        }
    }
}

/// A rate per second: a finite number, 0 or more.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate (a number per second, 0 or more)"
        )),
    }
}

/// `1048576`, `512KiB`, `3MiB`.
fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 65536, 64KiB, 3MiB)"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "Ki" => 1024,
        "MiB" | "Mi" => 1024 * 1024,
        other => return Err(format!("unknown size unit {other:?}; use KiB or MiB")),
    };
    let bytes = n
        .checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes < 8192 {
        return Err("must be at least 8KiB".into());
    }
    Ok(bytes)
}

#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory for ca.crt, tls.crt, tls.key and hmac.key.
    #[arg(
        long,
        env = "SECRET_INJECTOR_CERTS_OUT_DIR",
        default_value = "certs/self-signed/generated"
    )]
    pub out_dir: PathBuf,
    /// Namespace of the webhook Service.
    #[arg(
        long,
        env = "SECRET_INJECTOR_CERTS_NAMESPACE",
        default_value = "secret-injector"
    )]
    pub namespace: String,
    /// Name of the webhook Service.
    #[arg(
        long,
        env = "SECRET_INJECTOR_CERTS_SERVICE",
        default_value = "secret-injector"
    )]
    pub service: String,
    /// Extra DNS names for the serving certificate.
    #[arg(long = "dns", env = "SECRET_INJECTOR_CERTS_DNS", value_delimiter = ',')]
    pub extra_dns: Vec<String>,
    /// IP addresses for the serving certificate (e.g. 127.0.0.1 for local tests).
    #[arg(long = "ip", env = "SECRET_INJECTOR_CERTS_IP", value_delimiter = ',')]
    pub ips: Vec<std::net::IpAddr>,
    /// Webhook configuration files whose caBundle fields are rewritten.
    #[arg(
        long = "webhook-config",
        env = "SECRET_INJECTOR_CERTS_WEBHOOK_CONFIG",
        value_delimiter = ','
    )]
    pub webhook_configs: Vec<PathBuf>,
    /// Validity of the serving certificate in days (the CA lives twice as long).
    #[arg(long, env = "SECRET_INJECTOR_CERTS_DAYS", default_value_t = 365)]
    pub days: u32,
}

#[derive(Args, Debug, Clone)]
pub struct RenderArgs {
    /// Manifest file, directory (its .yaml, .yml and .json files) or `-` for stdin; repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        env = "SECRET_INJECTOR_RENDER_FILENAME",
        value_delimiter = ',',
        required = true
    )]
    pub files: Vec<PathBuf>,
    /// Read directories given with -f and --stores recursively.
    #[arg(short = 'R', long, env = "SECRET_INJECTOR_RENDER_RECURSIVE")]
    pub recursive: bool,
    /// SecretStore / ClusterSecretStore objects (file, directory or `-`; other kinds are
    /// ignored) to check store references against. Without it references are not checked.
    #[arg(long, env = "SECRET_INJECTOR_RENDER_STORES", value_delimiter = ',')]
    pub stores: Vec<PathBuf>,
    /// Namespace of objects that do not name one.
    #[arg(
        short = 'n',
        long,
        env = "SECRET_INJECTOR_RENDER_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// Output format.
    #[arg(short = 'o', long, env = "SECRET_INJECTOR_RENDER_OUTPUT", value_enum, default_value_t = RenderOutput::Text)]
    pub output: RenderOutput,
    /// As for `serve`: shorter refresh intervals are denied.
    #[arg(long, env = "SECRET_INJECTOR_MIN_REFRESH_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub min_refresh_interval: Duration,
    /// As for `serve`: Vault/OpenBao servers a store may name (checked with --stores).
    #[arg(long, env = "SECRET_INJECTOR_ALLOWED_VAULT_SERVERS", default_value = "", value_parser = parse_endpoints)]
    pub allowed_vault_servers: EndpointList,
    /// As for `serve`: AWS endpoints a store may name (checked with --stores).
    #[arg(long, env = "SECRET_INJECTOR_ALLOWED_AWS_ENDPOINTS", default_value = crate::store::DEFAULT_AWS_ENDPOINTS, value_parser = parse_endpoints)]
    pub allowed_aws_endpoints: EndpointList,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenderOutput {
    /// For people.
    Text,
    /// One JSON document (stable field names), for CI.
    Json,
}

/// A parsed, comma-separated list of endpoint patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointList(pub Vec<EndpointPattern>);

fn parse_endpoints(s: &str) -> Result<EndpointList, String> {
    crate::store::parse_endpoint_list(s).map(EndpointList)
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    crate::spec::parse_duration(s)
}

fn parse_positive(s: &str) -> Result<Duration, String> {
    let d = parse_interval(s)?;
    if d.is_zero() {
        return Err("must be longer than 0".into());
    }
    Ok(d)
}

fn parse_deadline(s: &str) -> Result<Duration, String> {
    let d = parse_interval(s)?;
    if d.is_zero() || d > Duration::from_secs(29) {
        return Err(
            "must be between 1s and 29s (the API server caps webhook timeouts at 30s)".into(),
        );
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_env() {
        let cli = Cli::try_parse_from([
            "secret-injector",
            "serve",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--admission-timeout",
            "5s",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.admission_timeout, Duration::from_secs(5));
        assert_eq!(args.listen.port(), 8443);
        assert!(Cli::try_parse_from([
            "secret-injector",
            "serve",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--admission-timeout",
            "45s"
        ])
        .is_err());
    }

    #[test]
    fn limit_defaults_and_sizes() {
        let cli = Cli::try_parse_from([
            "secret-injector",
            "serve",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.limits.max_request_body, 3 * 1024 * 1024);
        assert_eq!(args.limits.max_header_size, 64 * 1024);
        assert_eq!(args.limits.shutdown_drain, Duration::from_secs(5));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(args.budgets.max_concurrent_reads_per_store, 8);
        assert_eq!(
            args.budgets.cold_admissions(),
            crate::budget::ColdAdmissionLimit {
                per_second: 5.0,
                burst: 20
            }
        );
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert!(parse_rate("-1").is_err() && parse_rate("inf").is_err());
        assert!(parse_size("1").is_err());
        assert!(parse_size("3GB").is_err());
    }
}
