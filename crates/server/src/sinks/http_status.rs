//! What an HTTP destination's status code for a whole request means.

use super::connect::Answer;
use super::destination::SendFailure;

/// The meaning of a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: read the answer.
    Success,
    /// 401, 403: the credentials are refused. A configuration problem:
    /// retried with backoff (it may be fixed at the destination), never
    /// parked (the events are fine), shown as `failing`.
    Unauthorized,
    /// 408, 429, 5xx: try the same again later.
    Transient,
    /// Any other status: the request is refused for good.
    Permanent,
}

/// The verdict on `status`.
pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Success,
        401 | 403 => Verdict::Unauthorized,
        408 | 429 | 500..=599 => Verdict::Transient,
        _ => Verdict::Permanent,
    }
}

/// At most 512 characters of an answer, as text.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    text.chars().filter(|c| !c.is_control()).collect()
}

impl Verdict {
    /// The failure of a request `what` answered with `answer` (not 2xx).
    pub fn failure(self, what: &str, answer: &Answer) -> SendFailure {
        let error = format!("{what}: HTTP {}: {}", answer.status, excerpt(&answer.body));
        match self {
            Verdict::Unauthorized => SendFailure::configuration(error),
            Verdict::Permanent => {
                SendFailure::permanent(error, String::from_utf8_lossy(&answer.body))
            }
            Verdict::Success | Verdict::Transient => SendFailure::refused(error),
        }
    }
}
