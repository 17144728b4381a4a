//! The HTTP side of `send`: the target URL, TLS settings, and one keep-alive
//! HTTP/1.1 connection per worker (hyper over tokio-rustls).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{
    HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT,
};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// Where and how batches are posted.
pub struct Endpoint {
    host: String,
    port: u16,
    authority: String,
    path_and_query: String,
    /// TLS settings and the name to verify; `None` for `http://`.
    tls: Tls,
    headers: Vec<(hyper::header::HeaderName, HeaderValue)>,
}

/// How the server certificate is checked.
pub enum Trust {
    /// The public web roots (webpki-roots).
    WebRoots,
    /// The certificates of this PEM file (a private CA or a self-signed
    /// certificate such as auditsink's generated one).
    CaFile(std::path::PathBuf),
    /// Any certificate: for self-signed test receivers only.
    Insecure,
}

/// What one attempt gave.
pub enum Attempt {
    /// The receiver answered.
    Answered {
        status: u16,
        retry_after_secs: Option<u64>,
        body: Bytes,
    },
    /// No answer: connecting, TLS, sending or receiving failed, or timed out.
    ConnectionError(String),
    /// A failure that no retry can fix: an untrusted certificate, a TLS or
    /// HTTP protocol mismatch, a host name that does not resolve.
    Permanent(Permanent),
}

/// Why an attempt can never succeed as configured, and what to change.
#[derive(Debug, Clone)]
pub struct Permanent {
    /// The counter it is shown under in the summary's status codes.
    pub kind: &'static str,
    pub error: String,
    pub hint: String,
}

/// A host name that does not resolve (as opposed to a resolver that is
/// unavailable for now, which is a connection error like any other).
#[derive(Debug)]
struct UnknownHost(std::io::Error);

impl std::fmt::Display for UnknownHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for UnknownHost {}

impl Endpoint {
    /// Parses `url` and prepares TLS and the fixed request headers.
    pub fn new(
        url: &str,
        trust: &Trust,
        authorization: Option<&str>,
        content_type: &str,
        content_encoding: Option<&str>,
    ) -> anyhow::Result<Endpoint> {
        let Url {
            host,
            port,
            authority,
            path_and_query,
            https,
        } = parse_url(url)?;
        let tls = tls_for(&host, https, trust)?;
        let mut headers = vec![
            (HOST, HeaderValue::from_str(&authority)?),
            (CONTENT_TYPE, HeaderValue::from_str(content_type)?),
            (
                USER_AGENT,
                HeaderValue::from_static(concat!("auditsink-send/", env!("CARGO_PKG_VERSION"))),
            ),
        ];
        if let Some(encoding) = content_encoding {
            headers.push((CONTENT_ENCODING, HeaderValue::from_str(encoding)?));
        }
        if let Some(auth) = authorization {
            let mut value =
                HeaderValue::from_str(auth).context("--auth is not a valid header value")?;
            value.set_sensitive(true);
            headers.push((AUTHORIZATION, value));
        }
        Ok(Endpoint {
            host,
            port,
            authority,
            path_and_query,
            tls,
            headers,
        })
    }

    /// `host:port` as given in the URL.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Opens a connection and completes the TLS and HTTP/1.1 handshakes.
    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let addrs: Vec<_> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                // getaddrinfo's EAI_AGAIN: the resolver may answer later.
                if e.to_string().contains("Temporary failure") {
                    anyhow::Error::new(e)
                } else {
                    anyhow::Error::new(UnknownHost(e))
                }
            })
            .with_context(|| format!("resolving {}", self.host))?
            .collect();
        let tcp = TcpStream::connect(addrs.as_slice())
            .await
            .with_context(|| format!("connecting to {}", self.authority))?;
        tcp.set_nodelay(true).ok();
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .context("TLS handshake")?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(connection);
                Ok(sender)
            }
            None => {
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(connection);
                Ok(sender)
            }
        }
    }
}

/// The parts of an `https://` (or `http://`) URL a client connects with.
pub(crate) struct Url {
    pub host: String,
    pub port: u16,
    /// `host:port` as given.
    pub authority: String,
    pub path_and_query: String,
    pub https: bool,
}

/// Splits `url` (443 or 80 unless it names a port).
pub(crate) fn parse_url(url: &str) -> anyhow::Result<Url> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("{url:?}: use an https:// (or http://) URL"),
    };
    let Some(host) = uri.host() else {
        bail!("{url:?} has no host")
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| host.clone());
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    Ok(Url {
        host,
        port,
        authority,
        path_and_query,
        https,
    })
}

/// A TLS connector and the name to verify for `host`, when `https`.
pub(crate) type Tls = Option<(tokio_rustls::TlsConnector, ServerName<'static>)>;

/// The TLS settings for `host` (`None` for plain HTTP).
pub(crate) fn tls_for(host: &str, https: bool, trust: &Trust) -> anyhow::Result<Tls> {
    if !https {
        return Ok(None);
    }
    let name = ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
    let config = tls_config(trust)?;
    Ok(Some((
        tokio_rustls::TlsConnector::from(Arc::new(config)),
        name,
    )))
}

/// One worker's connection, opened on first use and again after an error or
/// when the receiver closed it.
pub struct Connection {
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    pub fn new() -> Connection {
        Connection { sender: None }
    }

    /// POSTs `body` and reads the whole answer, within `timeout`.
    pub async fn post(&mut self, endpoint: &Endpoint, body: Bytes, timeout: Duration) -> Attempt {
        match tokio::time::timeout(timeout, self.post_inner(endpoint, body)).await {
            Ok(Ok(attempt)) => attempt,
            Ok(Err(e)) => {
                self.sender = None;
                match permanent(&e, endpoint) {
                    Some(permanent) => Attempt::Permanent(permanent),
                    None => Attempt::ConnectionError(crate::error_chain(&e)),
                }
            }
            Err(_) => {
                self.sender = None;
                Attempt::ConnectionError(format!("no answer within {} s", timeout.as_secs_f64()))
            }
        }
    }

    async fn post_inner(&mut self, endpoint: &Endpoint, body: Bytes) -> anyhow::Result<Attempt> {
        // A kept-alive connection the receiver has closed since is replaced
        // before anything is sent on it: that is not a failed delivery.
        if let Some(sender) = &mut self.sender {
            if sender.is_closed() || sender.ready().await.is_err() {
                self.sender = None;
            }
        }
        let reused = self.sender.is_some();
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => self.sender.insert(endpoint.connect().await?),
        };
        let mut request = Request::post(endpoint.path_and_query.as_str()).body(Full::new(body))?;
        request
            .headers_mut()
            .extend(endpoint.headers.iter().cloned());
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            // Closed by the receiver before any of the request was written:
            // once more on a new connection (what HTTP clients do; the
            // receiver has seen nothing of this attempt).
            Err(mut e) if reused && e.message().is_some() => {
                let request = e.take_message().context("resending the request")?;
                let sender = self.sender.insert(endpoint.connect().await?);
                sender
                    .send_request(request)
                    .await
                    .context("sending the request")?
            }
            Err(e) => return Err(anyhow::Error::new(e.into_error()).context("sending the request")),
        };
        let status = response.status().as_u16();
        let retry_after_secs = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        Ok(Attempt::Answered {
            status,
            retry_after_secs,
            body,
        })
    }
}

/// The failure behind `error`, when no retry can fix it, with what to change.
fn permanent(error: &anyhow::Error, endpoint: &Endpoint) -> Option<Permanent> {
    let text = crate::error_chain(error);
    let make = |kind, hint: String| {
        Some(Permanent {
            kind,
            error: text.clone(),
            hint,
        })
    };
    for cause in error.chain() {
        if cause.downcast_ref::<UnknownHost>().is_some() {
            return make(
                "unknown_host",
                format!(
                    "the host name {:?} does not resolve: check the --url",
                    endpoint.host
                ),
            );
        }
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return match tls {
                rustls::Error::InvalidCertificate(why) => make(
                    "certificate_error",
                    certificate_hint(why, &endpoint.host),
                ),
                rustls::Error::InvalidMessage(_) => make(
                    "protocol_error",
                    format!(
                        "{} did not answer in TLS: if it is a plain-HTTP receiver, use http:// (else check the port)",
                        endpoint.authority
                    ),
                ),
                _ => make(
                    "tls_error",
                    format!(
                        "the TLS handshake with {} failed: the receiver and this sender share no TLS version or cipher, or it wants a client certificate",
                        endpoint.authority
                    ),
                ),
            };
        }
        if let Some(http) = cause.downcast_ref::<hyper::Error>() {
            if http.is_parse() || http.is_parse_status() {
                let hint = if endpoint.tls.is_none() {
                    format!(
                        "{} did not answer in HTTP: if it is an HTTPS receiver (auditsink is), use https://",
                        endpoint.authority
                    )
                } else {
                    format!("{} did not answer in HTTP/1.1", endpoint.authority)
                };
                return make("protocol_error", hint);
            }
        }
    }
    None
}

fn certificate_hint(why: &rustls::CertificateError, host: &str) -> String {
    let trust =
        "give its CA (or the certificate itself, e.g. auditsink's data_dir/tls/cert.pem) with \
                 --cacert PEM, or --insecure for a test receiver (Konnect's skip_ssl_verification)";
    match why {
        rustls::CertificateError::NotValidForName
        | rustls::CertificateError::NotValidForNameContext { .. } => format!(
            "the receiver's certificate is not for {host:?}: use a host name it was issued for in --url, or --insecure for a test receiver"
        ),
        rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
            "the receiver's certificate has expired: renew it, or --insecure for a test receiver"
                .to_owned()
        }
        _ => format!("the receiver's certificate is not trusted: {trust}"),
    }
}

fn tls_config(trust: &Trust) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS setup")?;
    let mut config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                auditsink_server::tls_client::AcceptAnyCertificate::new(provider),
            ))
            .with_no_client_auth(),
        Trust::WebRoots => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaFile(path) => {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.with_context(|| format!("{} is not PEM", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("a certificate in {} is unusable", path.display()))?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "{} holds no PEM certificate",
                path.display()
            );
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
