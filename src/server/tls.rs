//! Serving certificate that reloads from disk without a restart. The files are re-read on a
//! timer, which also follows the symlink swap Kubernetes does when a mounted Secret changes;
//! a pair that fails to load is ignored and the old one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no usable PEM private key")]
    NoKey { path: PathBuf },
    #[error("the key in {path} is of an unsupported type")]
    UnsupportedKey { path: PathBuf },
    #[error("{path} holds no usable CA certificate for client authentication: {reason}")]
    ClientCa { path: PathBuf, reason: String },
}

/// What the TLS stack uses (a signing key, a client-certificate verifier), loaded from files
/// and re-read on a timer. A version that fails to load is ignored and the current one keeps
/// serving; the fingerprint of the files' bytes tells whether anything changed.
/// Reads the files once: the value and the fingerprint of the bytes it came from.
type Loader<T> = Box<dyn Fn() -> Result<(T, [u8; 32]), TlsError> + Send + Sync>;

pub struct Reloading<T> {
    /// For log lines: what this is and which files it comes from.
    what: &'static str,
    files: String,
    load: Loader<T>,
    current: RwLock<(T, [u8; 32])>,
}

/// The serving certificate and key.
pub type ReloadingCert = Reloading<Arc<CertifiedKey>>;

/// `--client-ca-file`: a WebPKI client-certificate verifier over that CA bundle, re-read on
/// the same timer as the serving certificate. No CA names are sent in the
/// CertificateRequest: clients with one certificate (the API server's webhook kubeconfig)
/// send it regardless.
pub type ReloadingClientCa = Reloading<Arc<dyn ClientCertVerifier>>;

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("files", &self.files)
            .finish()
    }
}

impl<T: Clone + Send + Sync + 'static> Reloading<T> {
    fn start(
        what: &'static str,
        files: String,
        load: impl Fn() -> Result<(T, [u8; 32]), TlsError> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, TlsError> {
        let current = load()?;
        Ok(Arc::new(Self {
            what,
            files,
            load: Box::new(load),
            current: RwLock::new(current),
        }))
    }

    /// What is in use now.
    fn get(&self) -> T {
        self.current.read().expect("lock not poisoned").0.clone()
    }

    /// Re-read the files; returns true when a new version was installed.
    pub fn reload(&self) -> bool {
        match (self.load)() {
            Ok((value, fingerprint)) => {
                let mut current = self.current.write().expect("lock not poisoned");
                if current.1 == fingerprint {
                    return false;
                }
                *current = (value, fingerprint);
                info!(what = self.what, files = %self.files, "reloaded");
                true
            }
            Err(e) => {
                warn!(what = self.what, error = %e, "the new version could not be loaded; keeping the current one");
                false
            }
        }
    }

    pub fn spawn_reloader(
        self: &Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => { this.reload(); }
                    _ = shutdown.changed() => break,
                }
            }
        });
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn load(cert_path: &Path, key_path: &Path) -> Result<(Arc<CertifiedKey>, [u8; 32]), TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let fingerprint: [u8; 32] = Sha256::new()
        .chain_update(&cert_pem)
        .chain_update(&key_pem)
        .finalize()
        .into();
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.to_path_buf(),
        })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
        TlsError::UnsupportedKey {
            path: key_path.to_path_buf(),
        }
    })?;
    Ok((Arc::new(CertifiedKey::new(certs, signing)), fingerprint))
}

impl ReloadingCert {
    pub fn load(cert_path: PathBuf, key_path: PathBuf) -> Result<Arc<Self>, TlsError> {
        let files = format!("{} {}", cert_path.display(), key_path.display());
        Self::start("serving certificate", files, move || {
            load(&cert_path, &key_path)
        })
    }

    /// The listener's TLS configuration; with `client_ca`, a client certificate signed by it
    /// is required and anything else fails the handshake.
    pub fn server_config(
        self: &Arc<Self>,
        client_ca: Option<Arc<ReloadingClientCa>>,
    ) -> rustls::ServerConfig {
        let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(ca),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

fn load_client_ca(path: &Path) -> Result<(Arc<dyn ClientCertVerifier>, [u8; 32]), TlsError> {
    let pem = read(path)?;
    let fingerprint: [u8; 32] = Sha256::digest(&pem).into();
    let bad = |reason: String| TlsError::ClientCa {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate found".into()));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| bad(e.to_string()))?;
    Ok((verifier, fingerprint))
}

impl ReloadingClientCa {
    pub fn load(path: PathBuf) -> Result<Arc<Self>, TlsError> {
        let files = path.display().to_string();
        Self::start("client CA", files, move || load_client_ca(&path))
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.get()
    }
}

impl ClientCertVerifier for ReloadingClientCa {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(cert: &ReloadingCert) -> Vec<u8> {
        cert.current.read().unwrap().0.cert[0].as_ref().to_vec()
    }

    #[test]
    fn client_ca_loads_reloads_and_keeps_the_old_bundle_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client-ca.crt");
        assert!(matches!(
            ReloadingClientCa::load(path.clone()),
            Err(TlsError::Read { .. })
        ));
        std::fs::write(&path, "no certificate here").unwrap();
        assert!(matches!(
            ReloadingClientCa::load(path.clone()),
            Err(TlsError::ClientCa { .. })
        ));
        let first = crate::certs::generate(&["a.example".into()], &[], 1).unwrap();
        std::fs::write(&path, &first.ca_pem).unwrap();
        let ca = ReloadingClientCa::load(path.clone()).unwrap();
        assert!(ca.client_auth_mandatory());
        assert!(!ca.reload(), "unchanged file: nothing to do");
        std::fs::write(&path, "garbage").unwrap();
        assert!(!ca.reload(), "a broken bundle is not installed");
        let second = crate::certs::generate(&["b.example".into()], &[], 1).unwrap();
        std::fs::write(&path, &second.ca_pem).unwrap();
        assert!(ca.reload());
    }

    #[test]
    fn reload_swaps_good_pairs_and_keeps_the_old_one_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let first = crate::certs::generate(&["a.example".into()], &[], 1).unwrap();
        std::fs::write(&crt, &first.cert_pem).unwrap();
        std::fs::write(&key, &first.key_pem).unwrap();
        let cert = ReloadingCert::load(crt.clone(), key.clone()).unwrap();
        let original = serial(&cert);
        assert!(!cert.reload(), "unchanged files: nothing to do");

        // A half-written rotation (new cert, garbage key) is refused; the old pair keeps serving.
        std::fs::write(&key, "not a key").unwrap();
        assert!(!cert.reload());
        assert_eq!(serial(&cert), original);

        // The symlink swap a mounted Secret does: the path now points at a new, valid pair.
        let second = crate::certs::generate(&["b.example".into()], &[], 1).unwrap();
        let next = dir.path().join("next");
        std::fs::create_dir(&next).unwrap();
        std::fs::write(next.join("tls.crt"), &second.cert_pem).unwrap();
        std::fs::write(next.join("tls.key"), &second.key_pem).unwrap();
        std::fs::remove_file(&crt).unwrap();
        std::fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(next.join("tls.crt"), &crt).unwrap();
        std::os::unix::fs::symlink(next.join("tls.key"), &key).unwrap();
        assert!(cert.reload());
        assert_ne!(serial(&cert), original);
    }
}
