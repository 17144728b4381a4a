//! Konnect's API over HTTPS (hyper's client over `send`'s TLS settings),
//! with the personal access token as `Authorization: Bearer <PAT>`. The
//! token is read from `KONNECT_TOKEN` or `--token-file` and is never
//! printed or logged.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::send::client::{parse_url, tls_for, Tls, Trust};

/// Konnect's regions (its API host is `https://<region>.api.konghq.com`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    Us,
    Eu,
    Au,
    Me,
    Global,
}

impl Region {
    fn name(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Eu => "eu",
            Region::Au => "au",
            Region::Me => "me",
            Region::Global => "global",
        }
    }
}

/// Where Konnect's API is and how to authenticate.
#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// Konnect region: the API host is https://<region>.api.konghq.com.
    #[arg(long, value_enum, default_value = "us", global = true)]
    region: Region,
    /// Another API base URL instead of the region's (e.g. the emulator's,
    /// http://127.0.0.1:8480).
    #[arg(long, value_name = "URL", global = true)]
    api_url: Option<String>,
    /// File holding the personal access token (default: $KONNECT_TOKEN).
    #[arg(long, value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
    /// Trust this PEM certificate or CA for the API (an emulator with --tls).
    #[arg(long, value_name = "PEM", global = true)]
    api_cacert: Option<PathBuf>,
}

/// A Konnect API client.
pub struct Api {
    base: String,
    host: String,
    port: u16,
    authority: String,
    base_path: String,
    tls: Tls,
    authorization: HeaderValue,
    runtime: tokio::runtime::Runtime,
}

/// An answer: status and JSON body (`Null` when empty or not JSON).
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// Limit on one API call.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from the API (its documents are a few KiB; a
/// JWKS with many keys stays far below this).
const MAX_ANSWER_BYTES: usize = 4 << 20;

fn read_token(args: &ApiArgs) -> anyhow::Result<String> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?,
        None => match std::env::var("KONNECT_TOKEN") {
            Ok(token) => token,
            Err(_) => bail!(
                "no Konnect personal access token: set KONNECT_TOKEN or pass --token-file FILE"
            ),
        },
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("the Konnect personal access token is empty (KONNECT_TOKEN or --token-file)");
    }
    Ok(token)
}

impl Api {
    pub fn new(args: &ApiArgs) -> anyhow::Result<Api> {
        let base = match &args.api_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://{}.api.konghq.com", args.region.name()),
        };
        let url = parse_url(&base).with_context(|| format!("--api-url {base:?}"))?;
        let trust = match &args.api_cacert {
            Some(path) => Trust::CaFile(path.clone()),
            None => Trust::WebRoots,
        };
        let tls = tls_for(&url.host, url.https, &trust)?;
        let base_path = url
            .path_and_query
            .split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", read_token(args)?))
            .context("the personal access token is not a valid header value")?;
        authorization.set_sensitive(true);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Api {
            base,
            host: url.host,
            port: url.port,
            authority: url.authority,
            base_path,
            tls,
            authorization,
            runtime,
        })
    }

    /// The API base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One call; any answer (an error only when there was none).
    pub fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Reply> {
        let what = format!("{method} {}{path}", self.base);
        self.runtime
            .block_on(async {
                tokio::time::timeout(TIMEOUT, self.call_inner(method, path, body))
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within {} s", TIMEOUT.as_secs()))?
            })
            .with_context(|| what)
    }

    /// One call that must succeed (2xx); its body. Other answers become
    /// errors that say what Konnect said and what to do.
    pub fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let shown = format!("{method} {path}");
        success(&shown, self.call(method, path, body)?)
    }

    async fn call_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot connect to {}", self.authority))?;
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_path))
            .header(HOST, &self.authority)
            .header(ACCEPT, "application/json")
            .header(
                USER_AGENT,
                concat!("auditsink-konnect/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(bytes))?;
        request
            .headers_mut()
            .insert(AUTHORIZATION, self.authorization.clone());
        if body.is_some() {
            request
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let response = match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .context("TLS handshake")?;
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(connection);
                sender.send_request(request).await?
            }
            None => {
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(connection);
                sender.send_request(request).await?
            }
        };
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                anyhow::anyhow!("reading the answer (at most {MAX_ANSWER_BYTES} bytes): {e}")
            })?
            .to_bytes();
        let body = serde_json::from_slice(&body).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(&body).trim().to_owned();
            if text.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            }
        });
        Ok(Reply { status, body })
    }
}

/// What Konnect said in an error body (`detail`, `message` or the text).
pub fn detail(body: &Value) -> String {
    for key in ["detail", "message", "title"] {
        if let Some(text) = body.get(key).and_then(Value::as_str) {
            return text.to_owned();
        }
    }
    match body {
        Value::Null => String::new(),
        Value::String(text) => text.chars().take(300).collect(),
        other => other.to_string().chars().take(300).collect(),
    }
}

/// The body of a 2xx answer to `what` (`GET /v2/...`), else an error that
/// says what Konnect said and what to do.
pub fn success(what: &str, reply: Reply) -> anyhow::Result<Value> {
    if (200..300).contains(&reply.status) {
        return Ok(reply.body);
    }
    Err(api_error(what, &reply))
}

fn api_error(what: &str, reply: &Reply) -> anyhow::Error {
    let said = detail(&reply.body);
    match reply.status {
        401 => anyhow::anyhow!(
            "Konnect refused the personal access token (401 to {what}: {said}); check \
             KONNECT_TOKEN or --token-file, and --region"
        ),
        403 => anyhow::anyhow!(
            "the personal access token may not do this (403 to {what}: {said}); it needs the \
             organization admin role"
        ),
        status => anyhow::anyhow!("Konnect answered {status} to {what}: {said}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(region: Region, api_url: Option<&str>, token: &std::path::Path) -> ApiArgs {
        ApiArgs {
            region,
            api_url: api_url.map(str::to_owned),
            token_file: Some(token.to_path_buf()),
            api_cacert: None,
        }
    }

    #[test]
    fn the_region_names_the_api_host_and_the_token_comes_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("pat");
        std::fs::write(&token, "kpat_secret\n").unwrap();
        for (region, host) in [
            (Region::Us, "https://us.api.konghq.com"),
            (Region::Eu, "https://eu.api.konghq.com"),
            (Region::Au, "https://au.api.konghq.com"),
            (Region::Me, "https://me.api.konghq.com"),
            (Region::Global, "https://global.api.konghq.com"),
        ] {
            let api = Api::new(&args(region, None, &token)).unwrap();
            assert_eq!(api.base(), host);
            assert_eq!(api.port, 443);
            assert_eq!(api.authorization.to_str().unwrap(), "Bearer kpat_secret");
            assert!(api.authorization.is_sensitive());
        }
        let api = Api::new(&args(Region::Us, Some("http://127.0.0.1:8480/"), &token)).unwrap();
        assert_eq!(
            (api.base(), api.port, api.tls.is_none()),
            ("http://127.0.0.1:8480", 8480, true)
        );
        std::fs::write(&token, "  \n").unwrap();
        let empty = Api::new(&args(Region::Us, None, &token)).err().unwrap();
        assert!(empty.to_string().contains("empty"), "{empty}");
    }
}
