//! The simulated events, drawn from one seeded stream: what each event is
//! about and every value it carries, before any rendering. Every event
//! draws the same values in the same order whatever the output format, so
//! one seed gives the same events as CEF, as JSON or mixed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What an event is about, with its kind-specific fields.
#[derive(Debug, Clone)]
pub enum Kind {
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
pub enum Query {
    Empty,
    JsonWindow,
    Filter,
}

impl Query {
    /// The value (CEF escapes `=` as `\=`, JSON writes it as is).
    pub fn text(self, cef: bool) -> &'static str {
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
pub struct SimEvent {
    pub kind: Kind,
    pub portal_id: Option<String>,
    pub rt: i64,
    pub org_id: String,
    pub principal_id: String,
    pub src: String,
    pub trace_id: u64,
    pub user_agent: &'static str,
    pub kong_initiated: bool,
    /// CEF prefix shape: RFC 3164 (`Nov 25 19:46:40`) or RFC 3339.
    pub syslog_time: bool,
    /// With `--format mixed`: render as JSON.
    pub mixed_as_json: bool,
    /// JSON: `rt` as a number (`1764100000018`) rather than a string
    /// (`"1764100000018"`); Kong's examples show both.
    pub rt_as_number: bool,
    /// JSON: `cef_version` as a string (`"0"`) rather than a number (`0`);
    /// Kong's examples show both.
    pub cef_version_as_string: bool,
    /// Dev Portal authorization: with an empty `actor_id` (`actor_id=`), as
    /// in Kong's documented example.
    pub empty_actor_id: bool,
}

/// The successful authentication outcome (`success=true`).
pub const AUTH_SUCCESS: &str = "AUTHENTICATION_OUTCOME_SUCCESS";

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

/// Draws events from a seeded stream.
pub struct Generator {
    rng: ChaCha8Rng,
    org_id: String,
    portal_id: Option<String>,
    principals: Vec<String>,
    next_rt: i64,
}

impl Generator {
    /// Events from `seed`, the first at `start_ms` (ms since the epoch).
    pub fn new(seed: u64, start_ms: i64, org: Option<String>, portal: bool) -> Generator {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Drawn even when given, so --org and --portal do not shift the
        // other events.
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

    /// The Dev Portal id of the events (a portal generator only).
    pub fn set_portal_id(&mut self, id: String) {
        if self.portal_id.is_some() {
            self.portal_id = Some(id);
        }
    }

    /// The next event; each is 5 to 60 ms after the previous one.
    pub fn next_event(&mut self) -> SimEvent {
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
        let rt_as_number = rng.gen_bool(0.3);
        let cef_version_as_string = rng.gen_bool(0.3);
        // Drawn for every event, so --portal does not shift the stream.
        let actor_id_draw = rng.gen_bool(0.5);
        let empty_actor_id =
            actor_id_draw && self.portal_id.is_some() && matches!(kind, Kind::Authorization { .. });
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
            rt_as_number,
            cef_version_as_string,
            empty_actor_id,
        }
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.gen_range(0..items.len())]
}

/// A random (version 4) UUID.
pub fn uuid(rng: &mut impl Rng) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_764_100_000_000;

    #[test]
    fn org_and_portal_do_not_shift_the_stream() {
        let mut a = Generator::new(9, START, None, false);
        let mut b = Generator::new(9, START, Some("org-x".into()), true);
        for _ in 0..20 {
            let (x, y) = (a.next_event(), b.next_event());
            assert_eq!((x.rt, x.trace_id, &x.src), (y.rt, y.trace_id, &y.src));
            assert_eq!(y.org_id, "org-x");
            assert!(x.portal_id.is_none() && y.portal_id.is_some());
        }
    }

    #[test]
    fn times_start_at_start_and_grow_5_to_60_ms() {
        let mut g = Generator::new(1, START, None, false);
        let times: Vec<i64> = (0..100).map(|_| g.next_event().rt).collect();
        assert_eq!(times[0], START);
        assert!(times.windows(2).all(|w| (5..=60).contains(&(w[1] - w[0]))));
    }
}
