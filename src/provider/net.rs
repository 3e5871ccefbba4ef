//! The network rules every backend shares: the one forbidden-address rule, the one endpoint
//! check for store URLs, the one address-filtering DNS resolver (used by the reqwest client of
//! Vault and the probes, and by the AWS SDK's client), and the reqwest client itself: rustls
//! with the store's CA (or the Web PKI roots), no redirects, bounded timeouts. A name that
//! *resolves* to 169.254.169.254 (or is rebound to it later) is as unreachable as the literal
//! address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use crate::redact::scrub;

/// Link-local (cloud metadata lives there), unspecified, broadcast, and the EC2 IMDS IPv6
/// address: never a backend.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden_ip(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            // fe80::/10 link-local; fd00:ec2::254 is the EC2 IMDS IPv6 address.
            (seg[0] & 0xffc0) == 0xfe80
                || v6
                    == "fd00:ec2::254"
                        .parse::<std::net::Ipv6Addr>()
                        .expect("literal")
                || v6.is_unspecified()
        }
    }
}

/// Endpoints are absolute http(s) URLs with no credentials, query or path, and never
/// link-local or cloud-metadata addresses (a request forger's favourite targets).
pub(crate) fn check_endpoint(raw: &str) -> Result<Url, String> {
    let url =
        Url::parse(raw.trim()).map_err(|e| format!("{raw:?} is not an absolute URL ({e})"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!(
            "scheme {:?} is not allowed; use https",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials (user:password@)".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !matches!(url.path(), "" | "/") {
        return Err("must be scheme://host[:port] with no path, query or fragment".into());
    }
    let forbidden = match url.host() {
        None => return Err("has no host".into()),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "metadata.google.internal" || d == "metadata" || d == "instance-data" {
                return Err("cloud metadata endpoints are never allowed".into());
            }
            false
        }
        Some(url::Host::Ipv4(ip)) => is_forbidden_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_forbidden_ip(IpAddr::V6(ip)),
    };
    if forbidden {
        return Err("link-local and cloud metadata addresses are never allowed".into());
    }
    Ok(url)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// DNS that never yields a forbidden address, for reqwest and for the AWS SDK alike.
#[derive(Clone, Debug)]
pub(crate) struct GuardedResolver;

impl GuardedResolver {
    async fn lookup(host: &str) -> Result<Vec<IpAddr>, BoxError> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        let allowed = filter_forbidden(resolved);
        if allowed.is_empty() {
            return Err(format!(
                "{host} resolves only to link-local or metadata addresses, which are never contacted"
            )
            .into());
        }
        Ok(allowed.into_iter().map(|a| a.ip()).collect())
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let ips = Self::lookup(&host).await?;
            Ok(Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0))) as Addrs)
        })
    }
}

impl ResolveDns for GuardedResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move { Self::lookup(name).await.map_err(ResolveDnsError::new) })
    }
}

fn filter_forbidden(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    addrs
        .into_iter()
        .filter(|a| !is_forbidden_ip(a.ip()))
        .collect()
}

/// A client trusting `ca_pem` (PEM bundle) or, without one, the Web PKI roots.
pub fn backend_client(ca_pem: Option<&[u8]>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|_| "caBundle is not valid PEM".to_string())?;
                roots
                    .add(cert)
                    .map_err(|_| "caBundle holds an unusable certificate".to_string())?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .dns_resolver(Arc::new(GuardedResolver))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        // A redirect could send a request anywhere; neither Vault nor a probe needs one.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client setup failed: {}", scrub(&e.to_string())))
}

/// A transport error with its sources, scrubbed: what a probe or a backend call reports.
pub(crate) fn transport_error(e: &dyn std::error::Error) -> String {
    scrub(&super::error_chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses_are_dropped() {
        let addrs: Vec<SocketAddr> = [
            "169.254.169.254:0",
            "10.0.0.5:0",
            "[fd00:ec2::254]:0",
            "[fe80::1]:0",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(
            filter_forbidden(addrs),
            vec!["10.0.0.5:0".parse::<SocketAddr>().unwrap()]
        );
    }

    #[tokio::test]
    async fn localhost_still_resolves() {
        let name: Name = "localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = GuardedResolver.resolve(name).await.unwrap().collect();
        assert!(!addrs.is_empty());
    }

    #[tokio::test]
    async fn dns_never_yields_metadata_addresses() {
        let local = GuardedResolver.resolve_dns("localhost").await.unwrap();
        assert!(!local.is_empty());
        let e = GuardedResolver
            .resolve_dns("169.254.169.254")
            .await
            .unwrap_err();
        let chain = crate::provider::error_chain(&e);
        assert!(chain.contains("never contacted"), "{chain}");
    }
}
