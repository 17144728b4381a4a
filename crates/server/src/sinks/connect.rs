//! Connections to a destination: TCP, TLS (the public web roots plus a
//! configured CA, or no verification when `insecure`), and a small
//! keep-alive HTTP/1.1 client on hyper for the HTTP destinations.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::destination::SendFailure;

/// Largest answer read from a destination.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// A byte stream to a destination, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The TLS client settings of a sink.
pub fn tls_config(
    ca_file: Option<&Path>,
    insecure: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if insecure {
        return Ok(Arc::new(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(
                    crate::tls_client::AcceptAnyCertificate::new(provider),
                ))
                .with_no_client_auth(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("ca_file {}: no CERTIFICATE block", path.display()));
        }
    }
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// Connects to `host:port`, with TLS when `tls` is given. Nothing was sent
/// when it fails: the failure is `refused`, or a configuration problem
/// when the destination's certificate is not trusted (the sink shows
/// `failing` at once).
pub async fn connect(
    host: &str,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Box<dyn Stream>, SendFailure> {
    Ok(connect_probed(host, port, tls).await?.0)
}

/// [`connect`], with a [`Probe`] on the connection's socket.
pub async fn connect_probed(
    host: &str,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(Box<dyn Stream>, Probe), SendFailure> {
    let bare = host.trim_matches(['[', ']']);
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| SendFailure::refused(format!("connecting to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let probe = Probe::of(&tcp)
        .map_err(|e| SendFailure::refused(format!("connecting to {host}:{port}: {e}")))?;
    match tls {
        None => Ok((Box::new(tcp), probe)),
        Some(config) => {
            let name = ServerName::try_from(bare.to_owned()).map_err(|_| {
                SendFailure::refused(format!("{host:?} is not a host name for TLS"))
            })?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| tls_error(host, port, &e))?;
            Ok((Box::new(stream), probe))
        }
    }
}

/// A failed TLS handshake with `host:port`, saying what to do when the
/// destination's certificate was the reason.
fn tls_error(host: &str, port: u16, e: &std::io::Error) -> SendFailure {
    let untrusted = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
    if untrusted {
        SendFailure::configuration(format!(
            "TLS with {host}:{port}: {e} (the destination's certificate is not trusted: \
             set ca_file to the CA that signed it)"
        ))
    } else {
        SendFailure::refused(format!("TLS with {host}:{port}: {e}"))
    }
}

/// At most this much a peer sent is read and dropped before closing.
const DISCARD_BYTES: usize = 64 * 1024;

/// A second handle on a connection's socket, to see at once, without
/// reading through TLS or waiting for the runtime's next look at the
/// socket, whether the peer closed it or sent something.
pub struct Probe(std::net::TcpStream);

/// What a [`Probe`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peeked {
    /// Nothing waiting: the connection is open.
    Nothing,
    /// Bytes waiting to be read (left unread).
    Bytes,
    /// The peer closed the connection (or reset it).
    Closed,
}

impl Probe {
    fn of(tcp: &tokio::net::TcpStream) -> std::io::Result<Probe> {
        // A duplicate of the descriptor shares the non-blocking flag, so a
        // peek answers at once.
        use std::os::fd::AsFd;
        let fd = tcp.as_fd().try_clone_to_owned()?;
        Ok(Probe(std::net::TcpStream::from(fd)))
    }

    /// Peeks at the socket without waiting.
    pub fn peek(&self) -> Peeked {
        let mut byte = [0u8; 1];
        loop {
            return match self.0.peek(&mut byte) {
                Ok(0) => Peeked::Closed,
                Ok(_) => Peeked::Bytes,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Peeked::Nothing,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => Peeked::Closed,
            };
        }
    }

    /// Reads and drops what is waiting (up to [`DISCARD_BYTES`]) without
    /// waiting. A socket closed with bytes unread ends with a reset, and a
    /// reset throws away what was written to it and not yet taken by the
    /// peer; drained, it ends with a FIN after those bytes.
    pub fn discard_waiting(&self) {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut left = DISCARD_BYTES;
        while left > 0 {
            match (&self.0).read(&mut buf) {
                Ok(0) => return,
                Ok(n) => left = left.saturating_sub(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// Splits `host:port` (IPv6 in brackets).
pub fn host_port(address: &str, default_port: u16) -> Result<(String, u16), String> {
    let uri: Uri = format!("tcp://{address}")
        .parse()
        .map_err(|_| format!("{address:?} is not host:port"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("{address:?} has no host"))?
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(default_port)))
}

/// An answer from an HTTP destination.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body (at most [`MAX_ANSWER_BYTES`]).
    pub body: Bytes,
}

/// A keep-alive HTTP/1.1 client to one base URL (http or https).
pub struct HttpClient {
    host: String,
    port: u16,
    authority: String,
    base_path: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// A new connection is being made (nothing of the request sent yet).
    connecting: bool,
    timeout: Duration,
}

impl HttpClient {
    /// A client for `url` (`http://` or `https://`, optionally with a path
    /// prefix).
    pub fn new(
        url: &str,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<HttpClient, String> {
        let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "{url:?}: the URL must start with http:// or https://"
                ))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?} has no host"))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(HttpClient {
            authority: uri
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_else(|| host.clone()),
            host,
            port,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            tls: https.then_some(tls),
            sender: None,
            connecting: false,
            timeout,
        })
    }

    /// POSTs `body` to the base path + `path`; an error is a transport
    /// failure, saying whether the request may have arrived.
    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Answer, SendFailure> {
        let timeout = self.timeout;
        self.connecting = false;
        match tokio::time::timeout(timeout, self.post_inner(path, headers, body)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) if self.connecting => {
                self.sender = None;
                Err(SendFailure::refused(format!(
                    "connecting to {}: no answer within {timeout:?}",
                    self.authority
                )))
            }
            Err(_) => {
                self.sender = None;
                Err(SendFailure::unknown(format!(
                    "no answer within {timeout:?}"
                )))
            }
        }
    }

    async fn post_inner(
        &mut self,
        path: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Answer, SendFailure> {
        let reusable = match self.sender.take() {
            Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
            None => None,
        };
        let mut sender = match reusable {
            Some(sender) => sender,
            None => {
                self.connecting = true;
                let stream = connect(&self.host, self.port, self.tls.as_ref()).await?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| {
                            SendFailure::refused(format!("HTTP with {}: {e}", self.authority))
                        })?;
                tokio::spawn(connection);
                self.connecting = false;
                sender
            }
        };
        let mut request = hyper::Request::post(format!("{}{path}", self.base_path))
            .header(hyper::header::HOST, &self.authority)
            .header(
                hyper::header::USER_AGENT,
                concat!("auditsink/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| SendFailure::refused(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| SendFailure::unknown(format!("HTTP with {}: {e}", self.authority)))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                SendFailure::unknown(format!("reading the answer of {}: {e}", self.authority))
            })?
            .to_bytes();
        self.sender = Some(sender);
        Ok(Answer { status, body })
    }
}
