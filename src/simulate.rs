//! `auditsink simulate`: realistic, signed Konnect audit events as lines, for
//! testing a receiver (auditsink or another) and for the load benchmark.
//!
//! The events follow what Konnect sends (KONNECT.md and the shared sample):
//! authentication, authorization and access events, org or Dev Portal, both
//! CEF prefix shapes, user agents with spaces, and JSON with Konnect's types
//! (`rt` a string, `trace_id` a bare integer above 2^53, `success` the string
//! `"true"`, `granted` and `kong_initiated` booleans). Every random choice is
//! drawn from one ChaCha8 stream seeded by `--seed`, whatever the output
//! format, so one seed gives the same events as CEF, as JSON or mixed: the
//! renderings of event k normalize to the same fields.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use auditsink_parser::signature::SigningKeyPair;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use time::macros::format_description;
use time::OffsetDateTime;

#[derive(clap::Args)]
pub struct Args {
    /// Key directory as written by `auditsink keygen` (private.key and
    /// jwks.json). When it holds no key, one is generated there.
    #[arg(long)]
    jwks_dir: PathBuf,
    /// Number of events.
    #[arg(short = 'n', long = "count", default_value_t = 100)]
    count: u64,
    /// Line format: cef, json, or mixed (each event one or the other).
    #[arg(long, value_enum, default_value_t = OutputFormat::Cef)]
    format: OutputFormat,
    /// Seed of the generator: the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Organization id of every event (default: derived from the seed).
    #[arg(long)]
    org: Option<String>,
    /// Dev Portal audit logs (product `Dev-Portal`, with `portal_id`)
    /// instead of org audit logs.
    #[arg(long)]
    portal: bool,
    /// Time of the first event, RFC 3339 (default 2025-11-25T19:46:40Z);
    /// each next event is 5 to 60 ms later.
    #[arg(long, value_parser = parse_rfc3339)]
    start: Option<OffsetDateTime>,
}

/// `--format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// CEF with a syslog prefix (RFC 3164 or RFC 3339 time).
    Cef,
    /// One compact JSON object per line, keys sorted, `sig` last.
    Json,
    /// Each event CEF or JSON (a choice drawn from the seed).
    Mixed,
}

fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

/// 2025-11-25T19:46:40Z, the time of the shared sample.
const DEFAULT_START_MS: i64 = 1_764_100_000_000;

/// Events rendered and signed per round of worker threads.
const CHUNK: usize = 8192;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pair = load_or_create_key(&args.jwks_dir)?;
    let start_ms = args
        .start
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(DEFAULT_START_MS);
    let mut generator = Generator::new(args.seed, start_ms, args.org.clone(), args.portal);
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut remaining = args.count;
    while remaining > 0 {
        let take = remaining.min(CHUNK as u64) as usize;
        let events: Vec<SimEvent> = (0..take).map(|_| generator.next_event()).collect();
        remaining -= take as u64;
        let lines = render_all(&events, &pair, args.format, threads)?;
        for line in lines {
            match out
                .write_all(line.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
            {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS)
                }
                Err(e) => return Err(e).context("writing output"),
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => other.context("writing output").map(|_| ExitCode::SUCCESS),
    }
}

/// The key pair in `dir` (`private.key`), or a new one written there with
/// its `jwks.json` (said on stderr).
pub fn load_or_create_key(dir: &Path) -> anyhow::Result<SigningKeyPair> {
    let private = dir.join("private.key");
    let jwks = dir.join("jwks.json");
    if private.exists() {
        let text = std::fs::read_to_string(&private)
            .with_context(|| format!("cannot read {}", private.display()))?;
        return SigningKeyPair::from_secret_base64url(&text).with_context(|| {
            format!(
                "{} is not a key written by auditsink keygen",
                private.display()
            )
        });
    }
    anyhow::ensure!(
        !jwks.exists(),
        "{} exists without its private.key; use another --jwks-dir",
        jwks.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pair = SigningKeyPair::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&private)
        .with_context(|| format!("cannot create {}", private.display()))?;
    file.write_all(format!("{}\n", pair.secret_base64url()).as_bytes())?;
    file.sync_all()?;
    std::fs::write(&jwks, SigningKeyPair::jwks(&[&pair]))
        .with_context(|| format!("cannot write {}", jwks.display()))?;
    eprintln!(
        "auditsink simulate: no key in {}; generated one (kid {}): {} and {}",
        dir.display(),
        pair.kid(),
        private.display(),
        jwks.display()
    );
    Ok(pair)
}

/// Renders and signs `events` in order, on up to `threads` threads.
fn render_all(
    events: &[SimEvent],
    pair: &SigningKeyPair,
    format: OutputFormat,
    threads: usize,
) -> anyhow::Result<Vec<String>> {
    let per_thread = events.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = events
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|event| event.render(pair, format))
                        .collect::<anyhow::Result<Vec<String>>>()
                })
            })
            .collect();
        let mut lines = Vec::with_capacity(events.len());
        for worker in workers {
            let part = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a rendering thread panicked"))??;
            lines.extend(part);
        }
        Ok(lines)
    })
}

// ------------------------------------------------------------------ events

/// What an event is about, with its kind-specific fields.
#[derive(Debug, Clone)]
enum Kind {
    /// `AUTHENTICATION_TYPE_*` / `AUTHENTICATION_OUTCOME_*`.
    Authentication {
        auth_type: &'static str,
        outcome: &'static str,
    },
    /// `konnect` / `Authz.<resource>`.
    Authorization {
        resource: &'static str,
        action: &'static str,
        granted: bool,
    },
    /// `KongGateway` / `Ingress`.
    Access {
        request: String,
        act: &'static str,
        status: u16,
        query: Query,
    },
}

/// The `query` values Konnect's access events carry.
#[derive(Debug, Clone, Copy)]
enum Query {
    Empty,
    JsonWindow,
    Filter,
}

impl Query {
    /// The value (CEF escapes `=` as `\=`, JSON writes it as is).
    fn text(self, cef: bool) -> &'static str {
        match (self, cef) {
            (Query::Empty, _) => "{}",
            (Query::JsonWindow, _) => r#"{"end":"1684270800","start":"1684098000"}"#,
            (Query::Filter, true) => r"filter[name]\=prod&page[size]\=10",
            (Query::Filter, false) => "filter[name]=prod&page[size]=10",
        }
    }
}

/// One generated event, before rendering.
#[derive(Debug, Clone)]
struct SimEvent {
    kind: Kind,
    portal_id: Option<String>,
    rt: i64,
    org_id: String,
    principal_id: String,
    src: String,
    trace_id: u64,
    user_agent: &'static str,
    kong_initiated: bool,
    /// CEF prefix shape: RFC 3164 (`Nov 25 19:46:40`) or RFC 3339.
    syslog_time: bool,
    /// With `--format mixed`: render as JSON.
    mixed_as_json: bool,
}

const USER_AGENTS: &[&str] = &[
    "grpc-node/1.24.11 grpc-c/8.0.0 (linux; chttp2; ganges)",
    "kong-cli/3.1 (linux; amd64)",
    "curl/8.1.2",
    "grpc-go/1.54.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/113.0.0.0 Safari/537.36",
];
const RESOURCES: &[&str] = &[
    "usage",
    "portals",
    "services",
    "routes",
    "teams",
    "control-planes",
    "api-products",
    "identity-provider",
];
const ACTIONS: &[&str] = &["retrieve", "list", "create", "edit", "delete"];
const METHODS: &[&str] = &["POST", "PUT", "PATCH", "DELETE"];
const STATUSES: &[u16] = &[200, 201, 204, 400, 403, 404];
const AUTH_TYPES: &[&str] = &[
    "AUTHENTICATION_TYPE_BASIC",
    "AUTHENTICATION_TYPE_PAT",
    "AUTHENTICATION_TYPE_SSO",
];
const AUTH_FAILURES: &[&str] = &[
    "AUTHENTICATION_OUTCOME_INVALID_PASSWORD",
    "AUTHENTICATION_OUTCOME_LOCKED",
];
const AUTH_SUCCESS: &str = "AUTHENTICATION_OUTCOME_SUCCESS";

/// Draws events from a seeded stream. Every event draws the same values in
/// the same order whatever the output format.
struct Generator {
    rng: ChaCha8Rng,
    org_id: String,
    portal_id: Option<String>,
    principals: Vec<String>,
    next_rt: i64,
}

impl Generator {
    fn new(seed: u64, start_ms: i64, org: Option<String>, portal: bool) -> Generator {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Drawn even when given, so --org does not shift the other events.
        let drawn_org = uuid(&mut rng);
        let portal_id = uuid(&mut rng);
        let principals = (0..40).map(|_| uuid(&mut rng)).collect();
        Generator {
            rng,
            org_id: org.unwrap_or(drawn_org),
            portal_id: portal.then_some(portal_id),
            principals,
            next_rt: start_ms,
        }
    }

    fn next_event(&mut self) -> SimEvent {
        let rng = &mut self.rng;
        let rt = self.next_rt;
        self.next_rt += rng.gen_range(5..=60);
        let roll = rng.gen_range(0..100);
        let kind = if roll < 12 {
            let auth_type = pick(rng, AUTH_TYPES);
            let outcome = if rng.gen_bool(0.7) {
                AUTH_SUCCESS
            } else {
                pick(rng, AUTH_FAILURES)
            };
            Kind::Authentication { auth_type, outcome }
        } else if roll < 55 {
            Kind::Authorization {
                resource: pick(rng, RESOURCES),
                action: pick(rng, ACTIONS),
                granted: rng.gen_bool(0.9),
            }
        } else {
            let resource = pick(rng, RESOURCES.get(..7).unwrap_or(RESOURCES));
            let request = format!("/konnect-api/api/{resource}/{}", uuid(rng));
            let query = match rng.gen_range(0..4) {
                0 => Query::JsonWindow,
                1 => Query::Filter,
                _ => Query::Empty,
            };
            Kind::Access {
                request,
                act: pick(rng, METHODS),
                status: pick(rng, STATUSES),
                query,
            }
        };
        let principal_id = self.principals[rng.gen_range(0..self.principals.len())].clone();
        let src = format!(
            "10.{}.{}.{}",
            rng.gen_range(0..=255u8),
            rng.gen_range(0..=255u8),
            rng.gen_range(1..=254u8)
        );
        // Konnect trace ids are 63-bit: most are above 2^53.
        let trace_id = rng.gen_range(1u64 << 56..1u64 << 63);
        let user_agent = pick(rng, USER_AGENTS);
        let kong_initiated = rng.gen_bool(0.05);
        let syslog_time = rng.gen_bool(0.5);
        let mixed_as_json = rng.gen_bool(0.5);
        SimEvent {
            kind,
            portal_id: self.portal_id.clone(),
            rt,
            org_id: self.org_id.clone(),
            principal_id,
            src,
            trace_id,
            user_agent,
            kong_initiated,
            syslog_time,
            mixed_as_json,
        }
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.gen_range(0..items.len())]
}

/// A random (version 4) UUID.
fn uuid(rng: &mut ChaCha8Rng) -> String {
    let mut b: [u8; 16] = rng.gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl SimEvent {
    fn product(&self) -> &'static str {
        if self.portal_id.is_some() {
            "Dev-Portal"
        } else {
            "Konnect"
        }
    }

    /// (event_class_id, name, severity)
    fn header(&self) -> (&'static str, String, u8) {
        match &self.kind {
            Kind::Authentication { auth_type, outcome } => (auth_type, (*outcome).to_owned(), 0),
            Kind::Authorization { resource, .. } => ("konnect", format!("Authz.{resource}"), 1),
            Kind::Access { .. } => ("KongGateway", "Ingress".to_owned(), 1),
        }
    }

    fn time(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.rt) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    fn render(&self, pair: &SigningKeyPair, format: OutputFormat) -> anyhow::Result<String> {
        let json = match format {
            OutputFormat::Cef => false,
            OutputFormat::Json => true,
            OutputFormat::Mixed => self.mixed_as_json,
        };
        if json {
            Ok(pair.sign_json_line(&self.json_line())?)
        } else {
            Ok(pair.sign_cef_line(&self.cef_line()))
        }
    }

    /// The CEF line without its signature, fields in Konnect's order.
    fn cef_line(&self) -> String {
        let time = self.time();
        let prefix = if self.syslog_time {
            time.format(format_description!(
                "[month repr:short] [day padding:space] [hour]:[minute]:[second]"
            ))
        } else {
            time.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
        }
        .unwrap_or_default();
        let (class, name, severity) = self.header();
        let mut line = format!(
            "{prefix} konghq.com CEF:0|KongInc|{}|1.0|{class}|{name}|{severity}|org_id={} principal_id={} src={} trace_id={} user_agent={} rt={}",
            self.product(),
            self.org_id,
            self.principal_id,
            self.src,
            self.trace_id,
            self.user_agent,
            self.rt,
        );
        if let Some(portal) = &self.portal_id {
            line.push_str(&format!(" portal_id={portal}"));
        }
        match &self.kind {
            Kind::Authentication { outcome, .. } => line.push_str(&format!(
                " request=/api/v1/authenticate success={}",
                *outcome == AUTH_SUCCESS
            )),
            Kind::Authorization {
                action, granted, ..
            } => line.push_str(&format!(" action={action} granted={granted}")),
            Kind::Access {
                request,
                act,
                status,
                query,
            } => line.push_str(&format!(
                " request={request} act={act} status={status} query={}",
                query.text(true)
            )),
        }
        line.push_str(&format!(" kong_initiated={}", self.kong_initiated));
        line
    }

    /// The JSON line without its signature: keys sorted, Konnect's types.
    fn json_line(&self) -> String {
        let (class, name, severity) = self.header();
        let event_ts = self
            .time()
            .format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .unwrap_or_default();
        let mut object = std::collections::BTreeMap::<&str, Value>::new();
        object.insert("cef_version", 0.into());
        object.insert("event_class_id", class.into());
        object.insert("event_product", self.product().into());
        object.insert("event_ts", event_ts.into());
        object.insert("event_vendor", "KongInc".into());
        object.insert("event_version", "1.0".into());
        object.insert("kong_initiated", self.kong_initiated.into());
        object.insert("name", name.into());
        object.insert("org_id", self.org_id.as_str().into());
        object.insert("principal_id", self.principal_id.as_str().into());
        object.insert("rt", self.rt.to_string().into());
        object.insert("severity", severity.into());
        object.insert("src", self.src.as_str().into());
        object.insert("trace_id", self.trace_id.into());
        object.insert("user_agent", self.user_agent.into());
        if let Some(portal) = &self.portal_id {
            object.insert("portal_id", portal.as_str().into());
        }
        match &self.kind {
            Kind::Authentication { outcome, .. } => {
                object.insert("request", "/api/v1/authenticate".into());
                let success = if *outcome == AUTH_SUCCESS {
                    "true"
                } else {
                    "false"
                };
                object.insert("success", success.into());
            }
            Kind::Authorization {
                action, granted, ..
            } => {
                object.insert("action", (*action).into());
                object.insert("granted", (*granted).into());
            }
            Kind::Access {
                request,
                act,
                status,
                query,
            } => {
                object.insert("act", (*act).into());
                object.insert("query", query.text(false).into());
                object.insert("request", request.as_str().into());
                object.insert("status", (*status).into());
            }
        }
        // Serializing a map of plain values cannot fail.
        serde_json::to_string(&object).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_events_other_seed_others() {
        let pair = SigningKeyPair::from_secret_bytes(&[7; 32]);
        let lines = |seed| {
            let mut g = Generator::new(seed, DEFAULT_START_MS, None, false);
            (0..50)
                .map(|_| g.next_event().render(&pair, OutputFormat::Mixed).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(3), lines(3));
        assert_ne!(lines(3), lines(4));
    }

    #[test]
    fn org_does_not_shift_the_stream() {
        let mut a = Generator::new(9, DEFAULT_START_MS, None, false);
        let mut b = Generator::new(9, DEFAULT_START_MS, Some("org-x".into()), false);
        for _ in 0..20 {
            let (x, y) = (a.next_event(), b.next_event());
            assert_eq!((x.rt, x.trace_id, &x.src), (y.rt, y.trace_id, &y.src));
            assert_eq!(y.org_id, "org-x");
        }
    }
}
