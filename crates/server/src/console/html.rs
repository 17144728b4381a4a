//! HTML building blocks: escaping, query-string encoding, the page layout
//! and the headers every console answer carries.
//!
//! Every piece of text from the store goes through [`esc`] (element text
//! and double-quoted attribute values alike) or [`url_encode`] (query
//! values inside an `href`, then escaped as an attribute too).

use std::fmt::{self, Display, Write};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

/// Text to be written into HTML, escaped on display.
pub struct Escaped<'a>(pub &'a str);

/// `text`, escaped for element content and double-quoted attributes.
pub fn esc(text: &str) -> Escaped<'_> {
    Escaped(text)
}

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// Percent-encodes a query-string value: everything but `A-Z a-z 0-9 - . _ ~`.
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A query string (`a=1&b=2`) from pairs, values encoded.
pub fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (key, value) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(&url_encode(value));
    }
    out
}

/// The console's pages, for the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Status,
    Search,
    Quarantine,
}

/// Content-Security-Policy of every console page: only the console's own
/// script and style, no inline script or style, no framing, forms only to
/// the console itself.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// A whole page: the layout around `body`. `refresh_secs` makes the
/// console's script reload it periodically.
pub fn page(nav: Nav, title: &str, body: &str, refresh_secs: Option<u32>) -> String {
    let link = |target: Nav, href: &str, label: &str| {
        let current = if target == nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    };
    let refresh = refresh_secs.map_or(String::new(), |s| format!(" data-refresh=\"{s}\""));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · auditsink</title>\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/console.js\" defer></script></head>\
         <body{refresh}><header><span class=\"brand\">auditsink</span><nav>{}{}{}</nav></header>\
         <main>{body}</main></body></html>\n",
        esc(title),
        link(Nav::Status, "/", "Status"),
        link(Nav::Search, "/search", "Search"),
        link(Nav::Quarantine, "/quarantine", "Quarantine"),
    )
}

/// An HTML answer with the console's security headers.
pub fn html_response(status: StatusCode, html: String) -> Response<Full<Bytes>> {
    let mut response = crate::response::response(status, "text/html; charset=utf-8", html);
    harden(&mut response);
    response
}

/// Headers every admin answer carries: no MIME sniffing, no framing, no
/// referrer to other sites (a same-origin one keeps the form's `Origin`), no caching of what may be evidence; and the CSP.
pub fn harden<B>(response: &mut Response<B>) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
}

/// A page saying what went wrong.
pub fn error_page(status: StatusCode, nav: Nav, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<h1>{}</h1><p class=\"error\">{}</p>",
        esc(status.canonical_reason().unwrap_or("Error")),
        esc(message)
    );
    html_response(status, page(nav, "Error", &body, None))
}

/// A count with thousands separators.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A bar chart as inline SVG (markup, not script): one bar per value,
/// `labels` = the text under its two ends, the largest value shown as
/// `max_label` says; `title` of each bar from `bar_title`.
pub fn bar_chart(
    values: &[u64],
    labels: (&str, &str),
    max_label: impl Fn(u64) -> String,
    bar_title: impl Fn(usize, u64) -> String,
) -> String {
    const HEIGHT: u64 = 60;
    let largest = values.iter().copied().max().unwrap_or(0);
    let max = largest.max(1);
    let width = values.len().max(1);
    let mut svg = format!(
        "<figure class=\"chart\"><svg viewBox=\"0 0 {width} {HEIGHT}\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-label=\"{}\">",
        esc(&format!("{} to {}", labels.0, labels.1))
    );
    for (i, &value) in values.iter().enumerate() {
        if value == 0 {
            continue;
        }
        let h = (value * HEIGHT).div_ceil(max);
        let _ = write!(
            svg,
            "<rect x=\"{i}\" y=\"{}\" width=\"1\" height=\"{h}\"><title>{}</title></rect>",
            HEIGHT - h,
            esc(&bar_title(i, value))
        );
    }
    let _ = write!(
        svg,
        "</svg><figcaption><span>{}</span><span>max {}</span><span>{}</span></figcaption></figure>",
        esc(labels.0),
        esc(&max_label(largest)),
        esc(labels.1)
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\"").to_string(),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("plain ünïcode").to_string(), "plain ünïcode");
        assert_eq!(esc("").to_string(), "");
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(url_encode("a b&c=d/é\"<"), "a%20b%26c%3Dd%2F%C3%A9%22%3C");
        assert_eq!(
            query_string([("principal", "p 1"), ("limit", "50")]),
            "principal=p%201&limit=50"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn the_layout_escapes_its_title() {
        let html = page(Nav::Search, "<b>", "", Some(5));
        assert!(html.contains("<title>&lt;b&gt; · auditsink</title>"));
        assert!(html.contains("data-refresh=\"5\""));
        assert!(html.contains("<a href=\"/search\" aria-current=\"page\">"));
        assert!(!html.contains("<script>"));
    }
}
