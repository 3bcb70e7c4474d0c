//! TLS for the agent's link to the brain (`https://` for enrollment, `wss://` for sessions),
//! with rustls and the ring provider: no OpenSSL on the host, nothing to configure for a brain
//! with a public certificate.
//!
//! Trust, in order of what the config says:
//! - nothing: the Mozilla web PKI roots compiled into the agent (`webpki-roots`), so a brain
//!   behind a public certificate works the same on every host, whatever its system store holds;
//! - `ca_file`: a PEM bundle of private CAs, trusted *instead of* the web PKI roots (a brain on a
//!   private CA should not also accept any public certificate for its name);
//! - `brain_cert_sha256`: the SHA-256 of the brain's leaf certificate (DER), checked *in
//!   addition to* the chain and the name ([`PinnedVerifier`]): a pin narrows trust to one
//!   certificate and never widens it, so a pinned brain still needs a certificate its roots
//!   vouch for. Renewing the brain's certificate means updating the pin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// Why the agent's TLS settings cannot be used. Each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `ca_file` could not be read.
    #[error("ca_file {path}: {source}")]
    CaFileUnreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `ca_file` holds no PEM certificate.
    #[error(
        "ca_file {path}: no PEM certificate in it (expected `-----BEGIN CERTIFICATE-----` blocks)"
    )]
    CaFileEmpty {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in `ca_file` cannot be a trust anchor.
    #[error("ca_file {path}: certificate {index} is not a usable CA certificate: {why}")]
    CaCertificate {
        /// The file.
        path: PathBuf,
        /// Its position in the file, from 1.
        index: usize,
        /// What is wrong with it.
        why: String,
    },
    /// `brain_cert_sha256` is not a SHA-256 in hex.
    #[error(
        "brain_cert_sha256 must be the SHA-256 of the brain's certificate (DER) as 64 hex digits \
         (colons allowed), got {0:?}"
    )]
    BadPin(String),
    /// rustls refused the combination (no usable protocol versions, say).
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The crypto provider every TLS connection of the agent uses. Explicit, so a build that ends
/// up with a second provider compiled in (through a dependency's features) still picks ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider, for libraries that build their own rustls
/// configuration (the Redis client); harmless when one is installed already.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The client configuration for the brain: roots from `ca_file` (or the web PKI), and the
/// `brain_cert_sha256` pin when set.
pub fn brain_client_config(
    ca_file: Option<&Path>,
    pin: Option<&str>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca_file {
        Some(path) => private_roots(path)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let provider = provider();
    let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let config = match pin {
        Some(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                chain,
                pin: parse_pin(pin)?,
            }))
            .with_no_client_auth(),
        None => builder.with_webpki_verifier(chain).with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Reads a PEM bundle of CA certificates into a root store; every certificate must be usable.
pub fn private_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::CaFileUnreadable {
        path: path.to_owned(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    let mut count = 0;
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let bad = |why: String| TlsError::CaCertificate {
            path: path.to_owned(),
            index: i + 1,
            why,
        };
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
        count += 1;
    }
    if count == 0 {
        return Err(TlsError::CaFileEmpty {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// Reads `brain_cert_sha256`: 64 hex digits, any case, colons between bytes allowed (as
/// `openssl x509 -fingerprint -sha256` prints them).
pub fn parse_pin(text: &str) -> Result<[u8; 32], TlsError> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    hex::decode(&digits)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| TlsError::BadPin(text.to_owned()))
}

/// The pin of a certificate: SHA-256 of its DER, lowercase hex.
pub fn cert_sha256(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// A server certificate check that runs the ordinary web PKI check (chain to the roots, name,
/// validity) and then requires the leaf certificate to be the pinned one.
#[derive(Debug)]
struct PinnedVerifier {
    chain: Arc<WebPkiServerVerifier>,
    pin: [u8; 32],
}

/// The brain presented a certificate other than the pinned one.
#[derive(Debug, thiserror::Error)]
#[error(
    "the brain's certificate has SHA-256 {got}, not the pinned brain_cert_sha256 {pinned} \
     (a renewed certificate needs the new pin; a different one may be an impostor)"
)]
struct PinMismatch {
    got: String,
    pinned: String,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let got = Sha256::digest(end_entity.as_ref());
        if got.as_slice() != self.pin {
            // `General`: rustls prints its text as is (an `OtherError` would print as Debug).
            return Err(rustls::Error::General(
                PinMismatch {
                    got: hex::encode(got),
                    pinned: hex::encode(self.pin),
                }
                .to_string(),
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// An error and its causes on one line (`reqwest` and `tungstenite` keep the TLS reason in
/// the source chain, where a plain `Display` hides it).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        let next = err.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_read_with_or_without_colons_and_refuse_anything_else() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_pin(&hex).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_pin(&colons).unwrap(), [0xab; 32]);
        for bad in ["", "abcd", &"zz".repeat(32), &"ab".repeat(33)] {
            let err = parse_pin(bad).unwrap_err().to_string();
            assert!(err.contains("brain_cert_sha256"), "{err}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = brain_client_config(Some(&path), None).unwrap_err();
        assert!(matches!(err, TlsError::CaFileEmpty { .. }), "{err}");
        assert!(err.to_string().contains("ca_file"), "{err}");
        let missing = brain_client_config(Some(&dir.path().join("nope.pem")), None).unwrap_err();
        assert!(
            matches!(missing, TlsError::CaFileUnreadable { .. }),
            "{missing}"
        );
    }
}
