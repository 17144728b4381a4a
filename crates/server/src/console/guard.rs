//! Who may use the admin listener, and what a browser may do on it.
//!
//! - With `[admin] authorization`, every request must carry one of its
//!   values (compared in constant time, as a source's token); a refusal
//!   asks for Basic credentials so that a browser can log in.
//! - Without it (loopback only), a browser request must name a loopback
//!   host (`localhost`, `*.localhost` or an IP literal): a page elsewhere
//!   that rebinds its DNS name to 127.0.0.1 gets nothing.
//! - A POST must not come from another site (`Sec-Fetch-Site`, `Origin`),
//!   and the console's own form also carries a per-process token.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, HOST, ORIGIN, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::auth::{Authorizer, Presented};
use crate::response::error_response;

/// The admin listener's access rules.
pub struct AdminGuard {
    authorizer: Option<Authorizer>,
    form_token: String,
}

impl Default for AdminGuard {
    /// Loopback only, no authorization.
    fn default() -> Self {
        AdminGuard::new(None)
    }
}

impl AdminGuard {
    /// With `authorizer`, every admin request must pass it.
    pub fn new(authorizer: Option<Authorizer>) -> AdminGuard {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        AdminGuard {
            authorizer,
            form_token: secret.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Why `request` is refused before any routing, or `None`.
    pub fn refuse<B>(&self, request: &Request<B>) -> Option<Response<Full<Bytes>>> {
        let headers = request.headers();
        if let Some(authorizer) = &self.authorizer {
            // More than one header is refused, as on the webhook listener.
            let presented = match Presented::from_values(
                headers
                    .get_all(AUTHORIZATION)
                    .iter()
                    .map(HeaderValue::as_bytes),
            ) {
                Presented::One(value) => Some(value),
                Presented::None | Presented::Several => None,
            };
            if !authorizer.allows(presented) {
                let mut refusal =
                    error_response(StatusCode::UNAUTHORIZED, "admin authorization required");
                refusal.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"auditsink admin\", charset=\"UTF-8\""),
                );
                return Some(refusal);
            }
            return None;
        }
        let from_browser = headers.contains_key("sec-fetch-site") || headers.contains_key(ORIGIN);
        if (from_browser || super::paths::is_console_path(request.uri().path()))
            && !headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .is_some_and(is_loopback_host)
        {
            return Some(error_response(
                StatusCode::MISDIRECTED_REQUEST,
                "the admin listener answers browsers only under a loopback name \
                 (localhost or an IP address) unless [admin] authorization is set",
            ));
        }
        None
    }

    /// The token the console's forms carry.
    pub fn form_token(&self) -> &str {
        &self.form_token
    }

    /// Whether `presented` is the form token (constant time).
    pub fn form_token_matches(&self, presented: &str) -> bool {
        presented.len() == self.form_token.len()
            && bool::from(presented.as_bytes().ct_eq(self.form_token.as_bytes()))
    }
}

/// Whether a request says it comes from another site: `Sec-Fetch-Site`
/// other than `same-origin` or `none` (typed by the user), or an `Origin`
/// that is not this listener's: `http://` + `Host`, or `https://` + `Host`
/// behind a TLS-terminating proxy that passes `Host` on.
pub fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return true;
        }
    }
    match (headers.get(ORIGIN), headers.get(HOST)) {
        (None, _) => false,
        (Some(origin), Some(host)) => {
            let origin = origin.as_bytes();
            let origin_host = origin
                .strip_prefix(b"http://")
                .or_else(|| origin.strip_prefix(b"https://"));
            origin_host != Some(host.as_bytes())
        }
        (Some(_), None) => true,
    }
}

/// `localhost`, a name under `.localhost`, or an IP literal, with an
/// optional port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => {
                return ip.parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], path: &str) -> Request<()> {
        let mut builder = Request::builder().uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "localhost:9090",
            "LOCALHOST",
            "a.localhost:1",
            "127.0.0.1:9090",
            "10.1.2.3",
            "[::1]:9090",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9090",
            "127.0.0.1.nip.io:9090",
            "localhost.evil:80",
            "[::1]x",
            "a:b",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn browsers_must_use_a_loopback_name_without_authorization() {
        let guard = AdminGuard::default();
        assert!(guard
            .refuse(&request(&[("host", "localhost:9090")], "/"))
            .is_none());
        let refused = guard
            .refuse(&request(&[("host", "rebound.example:9090")], "/search"))
            .unwrap();
        assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
        // A browser fetch of the API under a foreign name, too.
        let fetch = [
            ("host", "rebound.example:9090"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert!(guard.refuse(&request(&fetch, "/api/events")).is_some());
        // Scripts and the CLI (no browser headers) are not concerned.
        assert!(guard
            .refuse(&request(&[("host", "admin")], "/api/events"))
            .is_none());
    }

    #[test]
    fn authorization_is_required_when_configured() {
        let guard = AdminGuard::new(Some(Authorizer::new(["Basic YWRtaW46cw=="])));
        let refused = guard
            .refuse(&request(&[("host", "auditsink.example")], "/"))
            .unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic "));
        let wrong = [("host", "h"), ("authorization", "Basic YWRtaW46dA==")];
        assert!(guard.refuse(&request(&wrong, "/healthz")).is_some());
        let right = [
            ("host", "auditsink.example"),
            ("authorization", "Basic YWRtaW46cw=="),
        ];
        assert!(guard.refuse(&request(&right, "/")).is_none());
        // The right value beside a wrong one, in either order, is refused.
        for pair in [
            ["Basic YWRtaW46cw==", "Basic YWRtaW46dA=="],
            ["Basic YWRtaW46dA==", "Basic YWRtaW46cw=="],
            ["Basic YWRtaW46cw==", "Basic YWRtaW46cw=="],
        ] {
            let several = [
                ("host", "auditsink.example"),
                ("authorization", pair[0]),
                ("authorization", pair[1]),
            ];
            let refused = guard.refuse(&request(&several, "/")).unwrap();
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn cross_site_posts_are_recognized() {
        let headers = |pairs: &[(&str, &str)]| request(pairs, "/").headers().clone();
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:9")])));
        assert!(!cross_site(&headers(&[
            ("host", "127.0.0.1:9"),
            ("origin", "http://127.0.0.1:9"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:9"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:9"),
            ("sec-fetch-site", "same-site")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:9"),
            ("origin", "http://evil.example")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:9"),
            ("origin", "null")
        ])));
        // Behind a TLS proxy that keeps Host, the page's origin is https.
        assert!(!cross_site(&headers(&[
            ("host", "audit.example"),
            ("origin", "https://audit.example")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "audit.example"),
            ("origin", "https://audit.example.evil")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "audit.example"),
            ("origin", "ftp://audit.example")
        ])));
    }

    #[test]
    fn form_token_compares_whole() {
        let guard = AdminGuard::default();
        let token = guard.form_token().to_owned();
        assert_eq!(token.len(), 64);
        assert!(guard.form_token_matches(&token));
        assert!(!guard.form_token_matches(&token[..63]));
        assert!(!guard.form_token_matches(""));
        assert_ne!(AdminGuard::default().form_token(), token);
    }
}
