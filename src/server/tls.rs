//! Serving certificate that reloads from disk without a restart. The files are re-read on a
//! timer, which also follows the symlink swap Kubernetes does when a mounted Secret changes;
//! a pair that fails to load is ignored and the old one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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
}

pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, [u8; 32])>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .finish()
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
        let current = load(&cert_path, &key_path)?;
        Ok(Arc::new(Self {
            cert_path,
            key_path,
            current: RwLock::new(current),
        }))
    }

    /// Re-read the files; returns true when a new pair was installed.
    pub fn reload(&self) -> bool {
        match load(&self.cert_path, &self.key_path) {
            Ok((key, fingerprint)) => {
                let mut current = self.current.write().expect("lock not poisoned");
                if current.1 == fingerprint {
                    return false;
                }
                *current = (key, fingerprint);
                info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                true
            }
            Err(e) => {
                warn!(error = %e, "new serving certificate could not be loaded; keeping the current one");
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

    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("lock not poisoned").0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(cert: &ReloadingCert) -> Vec<u8> {
        cert.current.read().unwrap().0.cert[0].as_ref().to_vec()
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
