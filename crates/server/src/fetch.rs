//! A bounded HTTPS GET, for fetching a JWKS document from Konnect's API host
//! (public web roots) or a key server with a private CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::rt::TokioIo;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not an absolute https URL.
    #[error("not an https URL: {0}")]
    Url(String),
    /// The extra CA file could not be used.
    #[error("CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Connecting, TLS, or HTTP failed.
    #[error("{0}")]
    Transport(String),
    /// The server answered something other than 200.
    #[error("HTTP {0}")]
    Status(u16),
    /// The answer was larger than allowed.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// GETs `url`, trusting the public web roots plus `extra_ca` if given;
/// refuses bodies over `max_bytes`, gives up after `timeout`.
pub async fn https_get(
    url: &str,
    extra_ca: Option<&Path>,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Bytes, FetchError> {
    tokio::time::timeout(timeout, get(url, extra_ca, max_bytes))
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

async fn get(url: &str, extra_ca: Option<&Path>, max_bytes: usize) -> Result<Bytes, FetchError> {
    let uri: Uri = url.parse().map_err(|_| FetchError::Url(url.to_owned()))?;
    if uri.scheme_str() != Some("https") {
        return Err(FetchError::Url(url.to_owned()));
    }
    let host = uri
        .host()
        .ok_or_else(|| FetchError::Url(url.to_owned()))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let transport = |e: &dyn std::fmt::Display| FetchError::Transport(e.to_string());

    let config = client_config(extra_ca)?;
    let server_name =
        rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .map_err(|_| FetchError::Url(url.to_owned()))?;
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| transport(&e))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| transport(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| transport(&e))?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = hyper::Request::get(path)
        .header(
            hyper::header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(&host),
        )
        .header(
            hyper::header::USER_AGENT,
            concat!("auditsink/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| transport(&e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| transport(&e))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    match Limited::new(response.into_body(), max_bytes)
        .collect()
        .await
    {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(FetchError::TooLarge(max_bytes))
        }
        Err(e) => Err(FetchError::Transport(e.to_string())),
    }
}

fn client_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let ca_error = |reason: String| FetchError::Ca {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| ca_error(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca_error("no CERTIFICATE block".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Transport(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
