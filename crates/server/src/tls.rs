//! TLS: PEM files to a rustls server configuration (TLS 1.2 and 1.3,
//! HTTP/2 and HTTP/1.1 by ALPN).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Failure to load the certificate or key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file held no usable PEM item.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: String,
        /// What is missing.
        what: &'static str,
    },
    /// rustls refused the pair (e.g. key does not match certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A loaded certificate with what the operator may want to see of it.
pub struct LoadedTls {
    /// The server configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 fingerprint of the leaf certificate, `AA:BB:...`.
    pub fingerprint: String,
}

/// Loads a PEM certificate chain and private key.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<LoadedTls, TlsError> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let fingerprint = fingerprint(&certs[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(LoadedTls {
        config: Arc::new(config),
        fingerprint,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.display().to_string(),
            what: "no CERTIFICATE block found",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.display().to_string(),
            what: "no PRIVATE KEY block found",
        })
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
