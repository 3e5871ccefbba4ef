//! The HTTP client every backend connection uses (Vault reads, store probes): rustls with the
//! store's CA (or the Web PKI roots), no redirects, bounded timeouts, and a DNS resolver that
//! refuses link-local and cloud-metadata addresses — so a name that *resolves* to
//! 169.254.169.254 (or is rebound to it later) is as unreachable as the literal address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::redact::scrub;
use crate::store::is_forbidden_ip;

struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = filter_forbidden(resolved);
            if allowed.is_empty() {
                return Err(format!("{host} resolves only to link-local or metadata addresses, which are never contacted").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
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
}
