//! TLS on the brain's own listener (`serve --tls-cert FILE --tls-key FILE`), so agents and
//! browsers reach it over `https://`/`wss://` without a proxy in front.
//!
//! The certificate is renewed without a restart: [`watch`] polls both files' modification times
//! every [`RELOAD_EVERY`] and, when either changed, loads the pair and swaps it into the
//! [`CertSwap`] resolver that every new handshake asks. A pair that does not load (the key
//! written before the certificate, say) is logged and the certificate in use is kept; the next
//! change is tried again. Connections already open keep the certificate they started with.
//!
//! rustls with the ring provider, HTTP/1.1 only (the listener serves HTTP/1.1 with upgrades).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Why the certificate pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{flag} {path}: {source}")]
    Unreadable {
        /// `--tls-cert` or `--tls-key`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file holds no PEM certificate.
    #[error("--tls-cert {path}: no PEM certificate in it")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no usable PEM private key.
    #[error("--tls-key {path}: no PEM private key in it ({why})")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// The parser's reason.
        why: String,
    },
    /// The key does not fit the certificate, or is of a kind the provider cannot sign with.
    #[error("--tls-key {key} does not go with --tls-cert {cert}: {why}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        why: String,
    },
}

/// The certificate and key files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl CertFiles {
    /// Reads and checks the pair: the key must match the certificate.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let read = |flag, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Unreadable {
                flag,
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read("--tls-cert", &self.cert)?;
        let key_pem = read("--tls-key", &self.key)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.cert.clone(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
            path: self.key.clone(),
            why: e.to_string(),
        })?;
        let mismatch = |why: String| TlsError::Mismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            why,
        };
        let certified =
            CertifiedKey::from_der(chain, key, &provider()).map_err(|e| mismatch(e.to_string()))?;
        Ok(Arc::new(certified))
    }

    /// Both files' modification times, the change [`watch`] looks for.
    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((modified(&self.cert)?, modified(&self.key)?))
    }
}

/// The certificate every new handshake is answered with, swapped whole on reload.
#[derive(Debug)]
pub struct CertSwap {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertSwap {
    /// Starts with `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Arc<CertSwap> {
        Arc::new(CertSwap {
            current: RwLock::new(key),
        })
    }

    fn swap(&self, key: Arc<CertifiedKey>) {
        *self.current.write().expect("certificate lock") = key;
    }
}

impl ResolvesServerCert for CertSwap {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").clone())
    }
}

/// The acceptor the listener wraps each connection in.
pub fn acceptor(certs: Arc<CertSwap>) -> TlsAcceptor {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Polls `files` every [`RELOAD_EVERY`] and swaps a changed pair into `certs` (see the module
/// header). Runs until the task is aborted.
pub async fn watch(files: CertFiles, certs: Arc<CertSwap>) {
    let mut seen = files.stamp();
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let stamp = files.stamp();
        if stamp.is_none() || stamp == seen {
            continue;
        }
        seen = stamp;
        let load = files.clone();
        match tokio::task::spawn_blocking(move || load.load()).await {
            Ok(Ok(key)) => {
                certs.swap(key);
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, "TLS certificate changed but does not load; serving the previous one")
            }
            Err(err) => tracing::warn!(%err, "TLS certificate reload failed"),
        }
    }
}
