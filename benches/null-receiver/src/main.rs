//! `null_receiver`: the ceiling of the load benchmark on this machine.
//!
//! The same transport as auditsink (tokio, hyper's auto HTTP/1.1 + h2
//! server, rustls with a self-signed certificate for `localhost`), and only
//! the work no receiver can skip: read the whole body, gunzip it (when
//! `Content-Encoding` says gzip in any of its spellings), count its lines,
//! discard it, answer `200 {"received":N}`. No authorization, parsing,
//! signature check or storage: the difference to auditsink in BENCHMARKS.md
//! is what those cost.
//!
//! ```text
//! null_receiver [--listen 127.0.0.1:0] [--cert-dir DIR]
//! ```
//!
//! Prints `listening on https://ADDR` on stderr once ready, writes the
//! certificate to `DIR/cert.pem` (for `auditsink send --cacert`), and on
//! SIGINT or SIGTERM prints its totals and exits.
#![forbid(unsafe_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    lines: AtomicU64,
    body_bytes: AtomicU64,
    decoded_bytes: AtomicU64,
}

struct Options {
    listen: SocketAddr,
    cert_dir: Option<PathBuf>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cert_dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => {
                options.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?
            }
            "--cert-dir" => options.cert_dir = Some(value()?.into()),
            "-h" | "--help" => {
                return Err("usage: null_receiver [--listen ADDR] [--cert-dir DIR]".into())
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("null_receiver: {message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = runtime.block_on(serve(options)) {
        eprintln!("null_receiver: {e}");
        std::process::exit(1);
    }
}

async fn serve(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    if let Some(dir) = &options.cert_dir {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("cert.pem"), certified.cert.pem())?;
    }
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(options.listen).await?;
    eprintln!("listening on https://{}", listener.local_addr()?);
    let totals = Arc::new(Totals::default());
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = &mut stop => break,
        };
        tcp.set_nodelay(true).ok();
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let totals = totals.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |request| {
                let totals = totals.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(request, &totals).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
    eprintln!(
        "null_receiver: requests={} lines={} body_bytes={} decoded_bytes={}",
        totals.requests.load(Ordering::Relaxed),
        totals.lines.load(Ordering::Relaxed),
        totals.body_bytes.load(Ordering::Relaxed),
        totals.decoded_bytes.load(Ordering::Relaxed),
    );
    Ok(())
}

async fn handle(request: Request<Incoming>, totals: &Totals) -> Response<Full<Bytes>> {
    let gzip = request
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return answer(StatusCode::BAD_REQUEST, "{\"error\":\"body\"}".into()),
    };
    let decoded = if gzip {
        let mut out = Vec::with_capacity(body.len() * 8);
        if flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return answer(StatusCode::BAD_REQUEST, "{\"error\":\"gzip\"}".into());
        }
        out
    } else {
        body.to_vec()
    };
    let lines = decoded
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    totals.requests.fetch_add(1, Ordering::Relaxed);
    totals.lines.fetch_add(lines, Ordering::Relaxed);
    totals
        .body_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    totals
        .decoded_bytes
        .fetch_add(decoded.len() as u64, Ordering::Relaxed);
    answer(StatusCode::OK, format!("{{\"received\":{lines}}}"))
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
