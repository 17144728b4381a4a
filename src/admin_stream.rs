//! Streaming reads from the admin listener, for commands that read the store
//! while `auditsink serve` holds it: NDJSON listings are handled line by line
//! as they arrive, so a large export does not wait for (or buffer) the whole
//! answer.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// The `Authorization` value admin requests carry, when the server's
/// `[admin]` asks for one (set once per command, from its configuration).
static AUTHORIZATION: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Sends `[admin] authorization` with every admin request of this command:
/// `AUDITSINK_ADMIN_AUTHORIZATION` if set, else the first `authorization`
/// value, else the first `authorization_env` variable's value (a server
/// with only `authorization_sha256` needs the environment variable).
pub fn authorize_with(config: &auditsink_server::Config) {
    let admin = &config.admin;
    let value = std::env::var("AUDITSINK_ADMIN_AUTHORIZATION")
        .ok()
        .or_else(|| admin.authorization.values().first().cloned())
        .or_else(|| {
            let variable = admin.authorization_env.values().first()?;
            std::env::var(variable).ok()
        });
    let _ = AUTHORIZATION.set(value);
}

async fn send(
    addr: SocketAddr,
    method: hyper::Method,
    path_and_query: &str,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| {
            format!(
                "cannot reach the admin listener at {addr} (where the running server said it \
                 listens, in data_dir/admin.addr; else its `[admin] listen`)"
            )
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(hyper::header::HOST, addr.to_string());
    if let Some(Some(value)) = AUTHORIZATION.get() {
        request = request.header(hyper::header::AUTHORIZATION, value);
    }
    let request = request.body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        bail!(
            "admin {path_and_query}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(response)
}

/// GETs an NDJSON listing and hands each non-empty line to `on_line` as it
/// arrives; stops early when `on_line` returns false.
pub async fn lines(
    addr: SocketAddr,
    path_and_query: &str,
    mut on_line: impl FnMut(&[u8]) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut body = send(addr, hyper::Method::GET, path_and_query)
        .await?
        .into_body();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the admin listener's answer")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = memchr_newline(&pending[start..]) {
            let line = &pending[start..start + end];
            start += end + 1;
            if !line.is_empty() && !on_line(line)? {
                return Ok(());
            }
        }
        pending.drain(..start);
    }
    if !pending.is_empty() {
        on_line(&pending)?;
    }
    Ok(())
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// GETs a path; the whole body.
pub async fn get(addr: SocketAddr, path_and_query: &str) -> anyhow::Result<Bytes> {
    let response = send(addr, hyper::Method::GET, path_and_query).await?;
    Ok(response.into_body().collect().await?.to_bytes())
}

/// POSTs to a path (no body); the whole answer.
pub async fn post(addr: SocketAddr, path_and_query: &str) -> anyhow::Result<Bytes> {
    let response = send(addr, hyper::Method::POST, path_and_query).await?;
    Ok(response.into_body().collect().await?.to_bytes())
}

/// A runtime for one command's admin requests.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
