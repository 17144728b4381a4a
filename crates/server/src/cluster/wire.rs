//! The messages receivers publish and indexers read: compact and
//! versioned, carrying exactly what the indexer needs to store a line as a
//! single-process auditsink would have.
//!
//! Version 1, every integer big-endian:
//!
//! ```text
//! byte 0      version (1)
//! byte 1      kind: b'e' (an event), b'q' (a quarantined line) or b'b'
//!             (a quarantined whole body, which reprocessing keeps as it is)
//! bytes 2..10 received_at, ms since the Unix epoch (i64)
//! bytes 10..12 length of the source name (u16), then the name (UTF-8)
//! event:      format (u8: 0 auto, 1 cef, 2 json), signature status (u8:
//!             0 unverified, 1 valid, 2 invalid, 3 missing), the year the
//!             line was read in (i32, for syslog prefixes without a year),
//!             then the raw line to the end
//! quarantine: length of the reason (u32), the reason (UTF-8), then the raw
//!             line (or body) to the end
//! ```
//!
//! The raw line is the evidence: the indexer parses it again with the same
//! options and the receiver's verdict on its signature, which gives the
//! identical event, record and identity.

use auditsink_parser::{Format, SignatureStatus};
use auditsink_storage::QuarantineReason;

/// The encoding's version; an indexer refuses others (it quarantines them).
pub const VERSION: u8 = 1;
const EVENT: u8 = b'e';
const QUARANTINE: u8 = b'q';
const QUARANTINE_BODY: u8 = b'b';

/// One message, decoded (borrowing the payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// An event that parsed (and passed the signature policy) at the receiver.
    Event {
        /// Common fields.
        head: Head<'a>,
        /// The source's configured format.
        format: Format,
        /// The receiver's signature verdict.
        signature: SignatureStatus,
        /// The year the receiver read the line in.
        year_hint: i32,
        /// The line as received.
        raw: &'a [u8],
    },
    /// A line (or body) kept in quarantine.
    Quarantine {
        /// Common fields.
        head: Head<'a>,
        /// Why.
        reason: &'a str,
        /// A whole body rather than a line.
        body: bool,
        /// The bytes as received.
        raw: &'a [u8],
    },
}

/// What every message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    /// The configured source that received it.
    pub source: &'a str,
    /// When the receiver received its delivery.
    pub received_at_ms: i64,
}

/// Why a payload is not a message this version reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Another version of the encoding.
    #[error("message version {0}; this auditsink reads version {VERSION}")]
    Version(u8),
    /// Truncated or malformed.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

fn head(out: &mut Vec<u8>, kind: u8, head: Head<'_>) {
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&head.received_at_ms.to_be_bytes());
    // Source names come from the configuration: far below 64 KiB.
    let source = &head.source.as_bytes()[..head.source.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(source.len() as u16).to_be_bytes());
    out.extend_from_slice(source);
}

/// Encodes an event message.
pub fn encode_event(
    head_fields: Head<'_>,
    format: Format,
    signature: SignatureStatus,
    year_hint: i32,
    raw: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + head_fields.source.len() + raw.len());
    head(&mut out, EVENT, head_fields);
    out.push(match format {
        Format::Auto => 0,
        Format::Cef => 1,
        Format::Json => 2,
    });
    out.push(match signature {
        SignatureStatus::Unverified => 0,
        SignatureStatus::Valid => 1,
        SignatureStatus::Invalid => 2,
        SignatureStatus::Missing => 3,
    });
    out.extend_from_slice(&year_hint.to_be_bytes());
    out.extend_from_slice(raw);
    out
}

/// Encodes a quarantine message.
pub fn encode_quarantine(head_fields: Head<'_>, reason: &QuarantineReason, raw: &[u8]) -> Vec<u8> {
    let kind = if reason.is_body() {
        QUARANTINE_BODY
    } else {
        QUARANTINE
    };
    let reason = reason.text();
    let mut out = Vec::with_capacity(20 + head_fields.source.len() + reason.len() + raw.len());
    head(&mut out, kind, head_fields);
    let reason = &reason.as_bytes()[..reason.len().min(u32::MAX as usize)];
    out.extend_from_slice(&(reason.len() as u32).to_be_bytes());
    out.extend_from_slice(reason);
    out.extend_from_slice(raw);
    out
}

/// A cursor over a payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Malformed(what));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn text(&mut self, n: usize, what: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.take(n, what)?).map_err(|_| WireError::Malformed(what))
    }
}

/// Decodes a payload.
pub fn decode(payload: &[u8]) -> Result<Message<'_>, WireError> {
    let mut reader = Reader(payload);
    let [version, kind] = reader.array::<2>("header")?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let received_at_ms = i64::from_be_bytes(reader.array("received_at")?);
    let source_len = u16::from_be_bytes(reader.array("source length")?) as usize;
    let source = reader.text(source_len, "source")?;
    let head = Head {
        source,
        received_at_ms,
    };
    match kind {
        EVENT => {
            let [format, signature] = reader.array::<2>("event header")?;
            let format = match format {
                0 => Format::Auto,
                1 => Format::Cef,
                2 => Format::Json,
                _ => return Err(WireError::Malformed("format")),
            };
            let signature = match signature {
                0 => SignatureStatus::Unverified,
                1 => SignatureStatus::Valid,
                2 => SignatureStatus::Invalid,
                3 => SignatureStatus::Missing,
                _ => return Err(WireError::Malformed("signature status")),
            };
            let year_hint = i32::from_be_bytes(reader.array("year")?);
            Ok(Message::Event {
                head,
                format,
                signature,
                year_hint,
                raw: reader.0,
            })
        }
        QUARANTINE | QUARANTINE_BODY => {
            let reason_len = u32::from_be_bytes(reader.array("reason length")?) as usize;
            let reason = reader.text(reason_len, "reason")?;
            Ok(Message::Quarantine {
                head,
                reason,
                body: kind == QUARANTINE_BODY,
                raw: reader.0,
            })
        }
        _ => Err(WireError::Malformed("kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: Head<'static> = Head {
        source: "eu",
        received_at_ms: 1_700_000_000_123,
    };

    #[test]
    fn round_trips() {
        let raw = b"CEF:0|Kong|Konnect|1|a|b|1|x=\xff";
        let event = encode_event(HEAD, Format::Cef, SignatureStatus::Invalid, 2026, raw);
        assert_eq!(
            decode(&event).unwrap(),
            Message::Event {
                head: HEAD,
                format: Format::Cef,
                signature: SignatureStatus::Invalid,
                year_hint: 2026,
                raw,
            }
        );
        let quarantined = encode_quarantine(HEAD, &"no CEF header".into(), b"");
        assert_eq!(
            decode(&quarantined).unwrap(),
            Message::Quarantine {
                head: HEAD,
                reason: "no CEF header",
                body: false,
                raw: b"",
            }
        );
        let body = QuarantineReason::Body("undecodable request body: bad gzip".into());
        assert_eq!(
            decode(&encode_quarantine(HEAD, &body, b"\x1f")).unwrap(),
            Message::Quarantine {
                head: HEAD,
                reason: "undecodable request body: bad gzip",
                body: true,
                raw: b"\x1f",
            }
        );
    }

    #[test]
    fn refuses_other_versions_and_truncations() {
        let event = encode_event(HEAD, Format::Json, SignatureStatus::Valid, 2026, b"{}");
        let mut other = event.clone();
        other[0] = 2;
        assert_eq!(decode(&other), Err(WireError::Version(2)));
        // Every truncation before the raw line is refused, never a panic.
        for end in 0..event.len() - 2 {
            assert!(decode(&event[..end]).is_err(), "{end}");
        }
        assert!(decode(b"").is_err());
    }
}
