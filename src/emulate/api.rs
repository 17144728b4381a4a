//! The emulated API: the subset of Konnect's audit-log API that
//! `auditsink konnect` uses, with Konnect's personal access token rules
//! (`Authorization: Bearer <PAT>`; no header or a wrong token is a 401) and
//! Konnect-style error bodies (`{"status","title","detail"}`).
//!
//! Why one piece (about 580 lines): the endpoints share the token check,
//! the paging and the error shape that make them Konnect's.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use auditsink_parser::signature::SigningKeyPair;
use auditsink_server::auth::Authorizer;
use auditsink_storage::format_ms;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};

use super::jobs;
use super::state::{lock, now_ms, Channel, Destination, Emulator, Job, LogFormat, Target};

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// A TLS acceptor with a self-signed certificate kept in `dir`.
pub fn tls_acceptor(dir: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let (cert, key, _) = auditsink_server::first_run::ensure_self_signed(dir)
        .with_context(|| format!("generating a certificate in {}", dir.display()))?;
    let certs = auditsink_server::tls::CertStore::load(&cert, &key)?;
    let mut config = (*certs.server_config()?).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves the API until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    emulator: Arc<Emulator>,
) -> anyhow::Result<()> {
    let authorizer = Arc::new(emulator.settings.pat.as_ref().map(|pat| {
        let header = format!("Bearer {pat}");
        Authorizer::new([header.as_str()])
    }));
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("auditsink emulate konnect: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let emulator = emulator.clone();
        let authorizer = authorizer.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let emulator = emulator.clone();
                let authorizer = authorizer.clone();
                async move { Ok::<_, Infallible>(handle(&emulator, &authorizer, request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                }
            }
        });
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: u16, value: &Value) -> Answer {
    json_text(status, format!("{value}\n"))
}

fn json_text(status: u16, text: String) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A Konnect-style error.
fn problem(status: u16, detail: &str) -> Answer {
    let title = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    answer(
        status,
        &json!({ "status": status, "title": title, "detail": detail }),
    )
}

/// A refused request, before it becomes an answer.
struct Problem(u16, String);

impl Problem {
    fn new(status: u16, detail: &str) -> Problem {
        Problem(status, detail.to_owned())
    }

    fn answer(self) -> Answer {
        problem(self.0, &self.1)
    }
}

fn authorized(authorizer: &Option<Authorizer>, header: Option<&[u8]>) -> bool {
    match authorizer {
        Some(authorizer) => authorizer.allows(header),
        None => header
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|token| !token.trim().is_empty()),
    }
}

async fn handle(
    emulator: &Arc<Emulator>,
    authorizer: &Option<Authorizer>,
    request: Request<Incoming>,
) -> Answer {
    let header = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if header.is_none() {
        return problem(
            401,
            "no Authorization header: send a personal access token as `Bearer <PAT>`",
        );
    }
    if !authorized(authorizer, header) {
        return problem(401, "invalid personal access token");
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return problem(400, "request body unreadable or larger than 64 KiB"),
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Method::GET, ["v2", "audit-log-webhook"]) => answer(200, &org_config(emulator)),
        (Method::PATCH, ["v2", "audit-log-webhook"]) => patch_org(emulator, &body),
        (Method::GET, ["v2", "audit-log-webhook", "status"]) => {
            let enabled = lock(&emulator.org).enabled;
            let configured = !lock(&emulator.org).target.endpoint.is_empty();
            answer(
                200,
                &status_json(&emulator.org_channel, enabled, configured),
            )
        }
        (Method::GET, ["v2", "audit-log-webhook", "jwks.json"]) => {
            json_text(200, SigningKeyPair::jwks(&[&emulator.key]))
        }
        (Method::GET, ["v2", "audit-log-replay-job"]) => get_job(&emulator.org_channel),
        (Method::PUT, ["v2", "audit-log-replay-job"]) => {
            put_job(emulator, &emulator.org_channel.clone(), &body)
        }
        (Method::GET, ["v2", "audit-log-destinations"]) => {
            let data: Vec<Value> = lock(&emulator.destinations)
                .values()
                .map(destination_json)
                .collect();
            let total = data.len();
            answer(
                200,
                &json!({ "data": data, "meta": { "page": { "total": total } } }),
            )
        }
        (Method::POST, ["v2", "audit-log-destinations"]) => create_destination(emulator, &body),
        (Method::GET, ["v2", "audit-log-destinations", id]) => {
            match lock(&emulator.destinations).get(*id) {
                Some(d) => answer(200, &destination_json(d)),
                None => problem(404, "no audit-log destination with this id"),
            }
        }
        (Method::PATCH, ["v2", "audit-log-destinations", id]) => {
            patch_destination(emulator, id, &body)
        }
        (Method::DELETE, ["v2", "audit-log-destinations", id]) => delete_destination(emulator, id),
        (method, ["v2", "portals", portal, rest @ ..]) => {
            if !valid_id(portal) {
                return problem(400, "not a portal id");
            }
            portal_route(emulator, method, portal, rest, &body)
        }
        _ => problem(404, "not part of the emulated API"),
    }
}

fn portal_route(
    emulator: &Arc<Emulator>,
    method: Method,
    portal: &str,
    rest: &[&str],
    body: &[u8],
) -> Answer {
    // Channels exist for configured portals only: asking about any id
    // creates nothing.
    let known = lock(&emulator.portals).contains_key(portal);
    match (method, rest) {
        (Method::GET, ["audit-log-webhook"]) => answer(200, &portal_config(emulator, portal)),
        (Method::PATCH, ["audit-log-webhook"]) => patch_portal(emulator, portal, body),
        (Method::GET, ["audit-log-webhook", "status"]) if !known => answer(
            200,
            &json!({
                "last_attempt_at": null,
                "last_response_code": null,
                "webhook_enabled": false,
                "webhook_status": "unconfigured",
            }),
        ),
        (Method::GET | Method::PUT, ["audit-log-replay-job"]) if !known => {
            problem(404, "this portal has no audit-log webhook")
        }
        (Method::GET, ["audit-log-webhook", "status"]) => {
            let webhook = lock(&emulator.portals)
                .get(portal)
                .cloned()
                .unwrap_or_default();
            let channel = emulator.portal_channel(portal);
            answer(
                200,
                &status_json(&channel, webhook.enabled, webhook.destination_id.is_some()),
            )
        }
        (Method::GET, ["audit-log-replay-job"]) => get_job(&emulator.portal_channel(portal)),
        (Method::PUT, ["audit-log-replay-job"]) => {
            put_job(emulator, &emulator.portal_channel(portal), body)
        }
        _ => problem(404, "not part of the emulated API"),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| format_ms(ms).into())
}

fn org_config(emulator: &Emulator) -> Value {
    let org = lock(&emulator.org);
    json!({
        "endpoint": org.target.endpoint,
        "log_format": org.target.log_format.name(),
        "enabled": org.enabled,
        "skip_ssl_verification": org.target.skip_ssl_verification,
        "updated_at": time(org.updated_ms),
    })
}

fn portal_config(emulator: &Emulator, portal: &str) -> Value {
    let webhook = lock(&emulator.portals)
        .get(portal)
        .cloned()
        .unwrap_or_default();
    json!({
        "audit_log_destination_id": webhook.destination_id,
        "enabled": webhook.enabled,
        "updated_at": time(webhook.updated_ms),
    })
}

fn destination_json(d: &Destination) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "endpoint": d.target.endpoint,
        "log_format": d.target.log_format.name(),
        "skip_ssl_verification": d.target.skip_ssl_verification,
        "created_at": format_ms(d.created_ms),
        "updated_at": format_ms(d.updated_ms),
    })
}

/// `webhook_status`: `active` while enabled, `inactive` when disabled,
/// `unconfigured` before an endpoint or destination is set.
fn status_json(channel: &Channel, enabled: bool, configured: bool) -> Value {
    let delivery = lock(&channel.delivery).clone();
    let status = match (configured, enabled) {
        (false, _) => "unconfigured",
        (true, true) => "active",
        (true, false) => "inactive",
    };
    json!({
        "last_attempt_at": time(delivery.last_attempt_ms),
        "last_response_code": delivery.last_response_code,
        "webhook_enabled": enabled,
        "webhook_status": status,
    })
}

/// The request body as a JSON object with only `allowed` keys.
fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, Problem> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Problem::new(400, &format!("the body is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Problem::new(400, "the body must be a JSON object"));
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Problem::new(400, &format!("unknown field {key:?}")));
    }
    Ok(map)
}

fn field_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, Problem> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Problem::new(400, &format!("{key} must be a boolean"))),
    }
}

fn field_str<'m>(map: &'m Map<String, Value>, key: &str) -> Result<Option<&'m str>, Problem> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Problem::new(400, &format!("{key} must be a string"))),
    }
}

/// Applies the target fields of `map` to `target`.
fn update_target(
    emulator: &Emulator,
    target: &mut Target,
    map: &Map<String, Value>,
) -> Result<(), Problem> {
    if let Some(endpoint) = field_str(map, "endpoint")? {
        check_endpoint(emulator, endpoint)?;
        target.endpoint = endpoint.to_owned();
    }
    if let Some(authorization) = field_str(map, "authorization")? {
        if hyper::header::HeaderValue::from_str(authorization).is_err() {
            return Err(Problem::new(
                400,
                "authorization is not a valid header value",
            ));
        }
        target.authorization = (!authorization.is_empty()).then(|| authorization.to_owned());
    }
    if let Some(format) = field_str(map, "log_format")? {
        target.log_format = LogFormat::parse(format)
            .ok_or_else(|| Problem::new(400, "log_format must be \"cef\" or \"json\""))?;
    }
    if let Some(skip) = field_bool(map, "skip_ssl_verification")? {
        target.skip_ssl_verification = skip;
    }
    Ok(())
}

fn check_endpoint(emulator: &Emulator, endpoint: &str) -> Result<(), Problem> {
    let uri: hyper::Uri = endpoint
        .parse()
        .map_err(|_| Problem::new(400, "endpoint is not a URL"))?;
    let scheme_ok = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => emulator.settings.allow_http,
        _ => false,
    };
    if !scheme_ok || uri.host().is_none() {
        return Err(Problem::new(400, "endpoint must be an https:// URL"));
    }
    Ok(())
}

const TARGET_FIELDS: [&str; 4] = [
    "endpoint",
    "authorization",
    "log_format",
    "skip_ssl_verification",
];

fn patch_org(emulator: &Emulator, body: &[u8]) -> Answer {
    let mut allowed = TARGET_FIELDS.to_vec();
    allowed.push("enabled");
    let map = match object(body, &allowed) {
        Ok(map) => map,
        Err(p) => return p.answer(),
    };
    {
        let mut org = lock(&emulator.org);
        let mut updated = org.clone();
        if let Err(p) = update_target(emulator, &mut updated.target, &map) {
            return p.answer();
        }
        match field_bool(&map, "enabled") {
            Ok(Some(enabled)) => updated.enabled = enabled,
            Ok(None) => {}
            Err(p) => return p.answer(),
        }
        if updated.enabled && updated.target.endpoint.is_empty() {
            return problem(400, "an enabled webhook needs an endpoint");
        }
        updated.updated_ms = Some(now_ms());
        *org = updated;
    }
    answer(200, &org_config(emulator))
}

fn patch_portal(emulator: &Emulator, portal: &str, body: &[u8]) -> Answer {
    let map = match object(body, &["audit_log_destination_id", "enabled"]) {
        Ok(map) => map,
        Err(p) => return p.answer(),
    };
    let destination = match field_str(&map, "audit_log_destination_id") {
        Ok(destination) => destination.map(str::to_owned),
        Err(p) => return p.answer(),
    };
    if let Some(id) = &destination {
        if !lock(&emulator.destinations).contains_key(id) {
            return problem(
                400,
                "audit_log_destination_id names no audit-log destination",
            );
        }
    }
    let enabled = match field_bool(&map, "enabled") {
        Ok(enabled) => enabled,
        Err(p) => return p.answer(),
    };
    {
        let mut portals = lock(&emulator.portals);
        let webhook = portals.entry(portal.to_owned()).or_default();
        if let Some(id) = destination {
            webhook.destination_id = Some(id);
        }
        if let Some(enabled) = enabled {
            webhook.enabled = enabled;
        }
        if webhook.enabled && webhook.destination_id.is_none() {
            webhook.enabled = false;
            return problem(400, "an enabled webhook needs an audit_log_destination_id");
        }
        webhook.updated_ms = Some(now_ms());
    }
    emulator.portal_channel(portal);
    answer(200, &portal_config(emulator, portal))
}

fn create_destination(emulator: &Emulator, body: &[u8]) -> Answer {
    let mut allowed = TARGET_FIELDS.to_vec();
    allowed.push("name");
    let map = match object(body, &allowed) {
        Ok(map) => map,
        Err(p) => return p.answer(),
    };
    let mut target = Target::default();
    if let Err(p) = update_target(emulator, &mut target, &map) {
        return p.answer();
    }
    if target.endpoint.is_empty() {
        return problem(400, "endpoint is required");
    }
    let name = match field_str(&map, "name") {
        Ok(name) => name.unwrap_or("audit-log destination").to_owned(),
        Err(p) => return p.answer(),
    };
    let now = now_ms();
    let destination = Destination {
        id: crate::simulate::uuid(&mut rand::thread_rng()),
        name,
        target,
        created_ms: now,
        updated_ms: now,
    };
    let value = destination_json(&destination);
    lock(&emulator.destinations).insert(destination.id.clone(), destination);
    answer(201, &value)
}

fn patch_destination(emulator: &Emulator, id: &str, body: &[u8]) -> Answer {
    let mut allowed = TARGET_FIELDS.to_vec();
    allowed.push("name");
    let map = match object(body, &allowed) {
        Ok(map) => map,
        Err(p) => return p.answer(),
    };
    let mut destinations = lock(&emulator.destinations);
    let Some(current) = destinations.get(id) else {
        return problem(404, "no audit-log destination with this id");
    };
    let mut updated = current.clone();
    if let Err(p) = update_target(emulator, &mut updated.target, &map) {
        return p.answer();
    }
    match field_str(&map, "name") {
        Ok(Some(name)) => updated.name = name.to_owned(),
        Ok(None) => {}
        Err(p) => return p.answer(),
    }
    updated.updated_ms = now_ms();
    let value = destination_json(&updated);
    destinations.insert(id.to_owned(), updated);
    answer(200, &value)
}

fn delete_destination(emulator: &Emulator, id: &str) -> Answer {
    let in_use = lock(&emulator.portals)
        .values()
        .any(|w| w.destination_id.as_deref() == Some(id));
    if in_use {
        return problem(
            409,
            "the destination is used by a portal's audit-log webhook",
        );
    }
    match lock(&emulator.destinations).remove(id) {
        Some(_) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default(),
        None => problem(404, "no audit-log destination with this id"),
    }
}

fn job_json(job: &Job) -> Value {
    json!({
        "start_at": format_ms(job.start_ms),
        "end_at": format_ms(job.end_ms),
        "status": job.status.name(),
        "updated_at": format_ms(job.updated_ms),
    })
}

fn get_job(channel: &Channel) -> Answer {
    match lock(&channel.job).as_ref() {
        Some(job) => answer(200, &job_json(job)),
        None => problem(404, "no replay job has been requested"),
    }
}

fn put_job(emulator: &Arc<Emulator>, channel: &Arc<Channel>, body: &[u8]) -> Answer {
    let map = match object(body, &["start_at", "end_at"]) {
        Ok(map) => map,
        Err(p) => return p.answer(),
    };
    let mut bounds = [0i64; 2];
    for (slot, key) in bounds.iter_mut().zip(["start_at", "end_at"]) {
        let text = match field_str(&map, key) {
            Ok(Some(text)) => text,
            Ok(None) => return problem(400, &format!("{key} is required")),
            Err(p) => return p.answer(),
        };
        match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
            Ok(t) => *slot = (t.unix_timestamp_nanos() / 1_000_000) as i64,
            Err(_) => return problem(400, &format!("{key} is not an RFC 3339 time")),
        }
    }
    match jobs::start(emulator, channel, bounds[0], bounds[1]) {
        Ok(job) => answer(202, &job_json(&job)),
        Err((status, detail)) => problem(status, &detail),
    }
}
