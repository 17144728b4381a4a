//! Compares Konnect's view of the webhook with this receiver's and says,
//! for each difference, what is wrong and what to do.

/// Konnect's side.
#[derive(Debug, Clone, Default)]
pub struct KonnectSide {
    pub endpoint: Option<String>,
    pub enabled: bool,
    pub skip_ssl_verification: bool,
    /// `cef` or `json`.
    pub log_format: Option<String>,
    pub last_attempt_ms: Option<i64>,
    /// 0: no HTTP answer.
    pub last_response_code: Option<u16>,
}

/// This receiver's side (its source's `/status`), when it runs.
#[derive(Debug, Clone, Default)]
pub struct ReceiverSide {
    pub source: String,
    pub path: String,
    pub self_signed: bool,
    /// The source's line format: `auto`, `cef` or `json`.
    pub format: String,
    pub running: bool,
    pub last_attempt_ms: Option<i64>,
    pub last_response_code: Option<u16>,
}

/// A verdict line: a problem to act on, or that all is well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub problem: bool,
    pub text: String,
}

fn problem(text: String) -> Verdict {
    Verdict {
        problem: true,
        text,
    }
}

/// Two attempts closer than this are taken for the same delivery.
const SAME_ATTEMPT_MS: i64 = 5_000;

/// What the answer code means for the operator.
fn code_cause(code: u16, receiver: &ReceiverSide) -> String {
    match code {
        0 => {
            let mut text = "Konnect's last attempt got no HTTP answer (connection refused, TLS \
                            failure or timeout)"
                .to_owned();
            if !receiver.running {
                text.push_str(": this receiver is not running");
            }
            text
        }
        401 => format!(
            "Konnect's last delivery was answered 401: the Authorization value configured in \
             Konnect is not one that source {:?} accepts (token mismatch); run `auditsink \
             konnect connect` to set it again",
            receiver.source
        ),
        404 => format!(
            "Konnect's last delivery was answered 404: its endpoint's path is not a source's \
             path (source {:?} is at {})",
            receiver.source, receiver.path
        ),
        413 => "Konnect's last delivery was answered 413: its batch is over the receiver's \
                [limits]; it is lost until replayed"
            .into(),
        429 => "Konnect's last delivery was answered 429: the receiver is overloaded (Konnect \
                retries)"
            .into(),
        500 => "Konnect's last delivery was answered 500: the receiver's store failed (Konnect \
                retries); see its log and /readyz"
            .into(),
        code => format!(
            "Konnect's last delivery was answered {code}: the batch is lost from Konnect's \
             point of view until replayed"
        ),
    }
}

/// The verdicts, problems first; one "agree" line when there is none.
pub fn verdicts(konnect: &KonnectSide, receiver: &ReceiverSide) -> Vec<Verdict> {
    let mut out = Vec::new();
    let Some(endpoint) = konnect.endpoint.as_deref() else {
        return vec![problem(
            "Konnect has no endpoint configured: run `auditsink konnect connect`".into(),
        )];
    };
    if !konnect.enabled {
        out.push(problem(
            "Konnect's webhook is disabled: Konnect sends nothing; `auditsink konnect connect` \
             enables it"
                .into(),
        ));
    }
    let path = endpoint
        .parse::<hyper::Uri>()
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    if path != receiver.path {
        out.push(problem(format!(
            "Konnect delivers to the path {path:?}, but source {:?} is at {:?}",
            receiver.source, receiver.path
        )));
    }
    if receiver.self_signed && !konnect.skip_ssl_verification {
        out.push(problem(
            "Konnect checks the receiver's certificate, but this receiver serves its generated \
             self-signed one: TLS handshakes fail; configure a trusted certificate, or run \
             `auditsink konnect connect` (it sets skip_ssl_verification)"
                .into(),
        ));
    }
    if let Some(sent) = &konnect.log_format {
        if receiver.format != "auto" && *sent != receiver.format {
            out.push(problem(format!(
                "Konnect sends {sent} lines, but source {:?} reads only {}: every line goes to \
                 quarantine; set its format to auto or {sent}, or connect with --format {}",
                receiver.source, receiver.format, receiver.format
            )));
        }
    }
    if !receiver.running {
        out.push(problem(
            "this receiver is not running: its side is unknown and Konnect's deliveries fail"
                .into(),
        ));
    }
    match (konnect.last_attempt_ms, konnect.last_response_code) {
        (None, _) if konnect.enabled => out.push(Verdict {
            problem: false,
            text: "Konnect has not attempted a delivery yet".into(),
        }),
        (Some(_), Some(code)) if !(200..300).contains(&code) => {
            out.push(problem(code_cause(code, receiver)))
        }
        _ => {}
    }
    if let (Some(konnect_at), true) = (konnect.last_attempt_ms, receiver.running) {
        let answered = konnect.last_response_code.is_some_and(|c| c != 0);
        let seen = receiver
            .last_attempt_ms
            .is_some_and(|at| at >= konnect_at - SAME_ATTEMPT_MS);
        if answered && !seen {
            out.push(problem(
                "Konnect is attempting deliveries that this receiver has not seen: something \
                 else answers at Konnect's endpoint (wrong host or port, DNS, a proxy or a \
                 load balancer)"
                    .into(),
            ));
        } else if answered
            && receiver
                .last_attempt_ms
                .is_some_and(|at| (at - konnect_at).abs() <= SAME_ATTEMPT_MS)
            && receiver.last_response_code != konnect.last_response_code
            && receiver.last_response_code.is_some()
        {
            out.push(problem(format!(
                "the two ends disagree: Konnect's last answer was {}, the receiver's {} (a \
                 proxy in between?)",
                konnect.last_response_code.unwrap_or(0),
                receiver.last_response_code.unwrap_or(0)
            )));
        }
    }
    if out.iter().all(|v| !v.problem) {
        if let (Some(code), Some(at)) = (konnect.last_response_code, konnect.last_attempt_ms) {
            out.push(Verdict {
                problem: false,
                text: format!(
                    "both ends agree: Konnect's last delivery ({}) was answered {code}, and \
                     this receiver stored it",
                    auditsink_storage::format_ms(at)
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> (KonnectSide, ReceiverSide) {
        (
            KonnectSide {
                endpoint: Some("https://h:8443/audit-logs".into()),
                enabled: true,
                skip_ssl_verification: true,
                log_format: Some("cef".into()),
                last_attempt_ms: Some(100_000),
                last_response_code: Some(200),
            },
            ReceiverSide {
                source: "konnect".into(),
                path: "/audit-logs".into(),
                self_signed: true,
                format: "auto".into(),
                running: true,
                last_attempt_ms: Some(100_010),
                last_response_code: Some(200),
            },
        )
    }

    fn problems(k: &KonnectSide, r: &ReceiverSide) -> Vec<String> {
        verdicts(k, r)
            .into_iter()
            .filter(|v| v.problem)
            .map(|v| v.text)
            .collect()
    }

    #[test]
    fn agreeing_ends_give_one_line() {
        let (k, r) = good();
        let all = verdicts(&k, &r);
        assert_eq!(all.len(), 1);
        assert!(!all[0].problem && all[0].text.starts_with("both ends agree"));
    }

    #[test]
    fn each_difference_names_its_cause() {
        let (mut k, mut r) = good();
        k.last_response_code = Some(401);
        r.last_response_code = Some(401);
        assert!(problems(&k, &r)[0].contains("token mismatch"));

        let (mut k, r) = good();
        k.enabled = false;
        assert!(problems(&k, &r)[0].contains("disabled"));

        let (k, mut r) = good();
        r.last_attempt_ms = Some(10_000);
        assert!(problems(&k, &r)[0].contains("has not seen"));

        let (mut k, r) = good();
        k.skip_ssl_verification = false;
        assert!(problems(&k, &r)[0].contains("self-signed"));

        let (mut k, r) = good();
        k.endpoint = Some("https://h:8443/wrong".into());
        assert!(problems(&k, &r)[0].contains("\"/wrong\""));

        let (mut k, mut r) = good();
        k.last_response_code = Some(0);
        r.running = false;
        let found = problems(&k, &r);
        assert!(
            found.iter().any(|p| p.contains("no HTTP answer")),
            "{found:?}"
        );

        let (k, mut r) = good();
        r.format = "json".into();
        assert!(problems(&k, &r)[0].contains("quarantine"));

        let (mut k, r) = good();
        k.last_response_code = Some(502);
        let found = problems(&k, &r);
        assert!(found.iter().any(|p| p.contains("disagree")), "{found:?}");
    }
}
