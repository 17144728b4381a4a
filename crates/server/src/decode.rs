//! Request body decompression by `Content-Encoding`, with a limit on the
//! decompressed size so a small bomb cannot exhaust memory.

use std::io::Read;

/// A body encoding auditsink understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// gzip, whatever the label: `gzip`, `x-gzip`, or Konnect's documented
    /// `application/gzip`.
    Gzip,
    /// HTTP `deflate`: zlib-wrapped per RFC 9110, raw deflate tolerated.
    Deflate,
}

impl Encoding {
    /// Reads a `Content-Encoding` header value. `None` for an encoding we do
    /// not support (answered 415). Labels are case-insensitive.
    pub fn from_header(value: Option<&[u8]>) -> Option<Encoding> {
        let Some(value) = value else {
            return Some(Encoding::Identity);
        };
        let value = std::str::from_utf8(value).ok()?.trim().to_ascii_lowercase();
        match value.as_str() {
            "" | "identity" => Some(Encoding::Identity),
            "gzip" | "x-gzip" | "application/gzip" | "application/x-gzip" => Some(Encoding::Gzip),
            "deflate" => Some(Encoding::Deflate),
            _ => None,
        }
    }
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// It inflates past the limit.
    #[error("decompressed body exceeds {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The compressed stream is corrupt or truncated.
    #[error("corrupt {encoding} body: {reason}")]
    Corrupt {
        /// `gzip` or `deflate`.
        encoding: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The caller refused to let the decompressed body grow (see
    /// [`decode_within`]).
    #[error("decompression stopped: no room for the decompressed body")]
    Refused,
}

/// Decodes `body`, refusing to produce more than `limit` bytes.
pub fn decode(encoding: Encoding, body: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
    decode_within(encoding, body, limit, &mut |_| true)
}

/// Decodes `body` as [`decode`] does, asking `grow` before the output's
/// buffer is allocated or grows, with the capacity it is to have; a `false`
/// stops decoding with [`DecodeError::Refused`] (the receiver's memory
/// budget says no, or the client left).
pub fn decode_within(
    encoding: Encoding,
    body: &[u8],
    limit: u64,
    grow: &mut dyn FnMut(usize) -> bool,
) -> Result<Vec<u8>, DecodeError> {
    match encoding {
        Encoding::Identity if body.len() as u64 > limit => Err(DecodeError::TooLarge { limit }),
        Encoding::Identity if !grow(body.len()) => Err(DecodeError::Refused),
        Encoding::Identity => Ok(body.to_vec()),
        Encoding::Gzip => read_limited(
            flate2::read::MultiGzDecoder::new(body),
            "gzip",
            body.len(),
            limit,
            grow,
        ),
        Encoding::Deflate => {
            // RFC 9110 says zlib; some senders send raw deflate. A zlib
            // stream starts with a header whose 16-bit value is a multiple of 31.
            let zlib = body.len() >= 2
                && body[0] & 0x0f == 8
                && u16::from_be_bytes([body[0], body[1]]) % 31 == 0;
            if zlib {
                read_limited(
                    flate2::read::ZlibDecoder::new(body),
                    "deflate",
                    body.len(),
                    limit,
                    grow,
                )
            } else {
                read_limited(
                    flate2::read::DeflateDecoder::new(body),
                    "deflate",
                    body.len(),
                    limit,
                    grow,
                )
            }
        }
    }
}

fn read_limited(
    mut reader: impl Read,
    encoding: &'static str,
    compressed_len: usize,
    limit: u64,
    grow: &mut dyn FnMut(usize) -> bool,
) -> Result<Vec<u8>, DecodeError> {
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    // Start from a plausible ratio and grow by hand: `read_to_end` doubles
    // its buffer, which near the limit would cost up to twice the limit.
    let initial = compressed_len.saturating_mul(8).min(limit_usize);
    if !grow(initial) {
        return Err(DecodeError::Refused);
    }
    let mut out = Vec::with_capacity(initial);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DecodeError::Corrupt {
                    encoding,
                    reason: e.to_string(),
                })
            }
        };
        let needed = out.len() + n;
        if needed > limit_usize {
            return Err(DecodeError::TooLarge { limit });
        }
        if needed > out.capacity() {
            let target = out.capacity().saturating_mul(2).clamp(needed, limit_usize);
            if !grow(target) {
                return Err(DecodeError::Refused);
            }
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn labels() {
        for label in ["gzip", "x-gzip", "application/gzip", "GZIP", " gzip "] {
            assert_eq!(
                Encoding::from_header(Some(label.as_bytes())),
                Some(Encoding::Gzip),
                "{label}"
            );
        }
        assert_eq!(Encoding::from_header(None), Some(Encoding::Identity));
        assert_eq!(
            Encoding::from_header(Some(b"identity")),
            Some(Encoding::Identity)
        );
        assert_eq!(
            Encoding::from_header(Some(b"deflate")),
            Some(Encoding::Deflate)
        );
        assert_eq!(Encoding::from_header(Some(b"br")), None);
        assert_eq!(Encoding::from_header(Some(b"gzip, br")), None);
    }

    #[test]
    fn gzip_round_trip_and_multi_member() {
        let mut body = gzip(b"a\n");
        body.extend(gzip(b"b\n"));
        assert_eq!(decode(Encoding::Gzip, &body, 100).unwrap(), b"a\nb\n");
    }

    #[test]
    fn deflate_zlib_and_raw() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"line\n").unwrap();
        assert_eq!(
            decode(Encoding::Deflate, &z.finish().unwrap(), 100).unwrap(),
            b"line\n"
        );
        let mut r = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        r.write_all(b"line\n").unwrap();
        assert_eq!(
            decode(Encoding::Deflate, &r.finish().unwrap(), 100).unwrap(),
            b"line\n"
        );
    }

    #[test]
    fn a_bomb_never_costs_more_than_the_limit() {
        let limit = 10 * 1024 * 1024 + 123;
        let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
        let mut out = Vec::new();
        let error = read_limited(
            flate2::read::MultiGzDecoder::new(bomb.as_slice()),
            "gzip",
            bomb.len(),
            limit as u64,
            &mut |_| true,
        );
        assert_eq!(
            error,
            Err(DecodeError::TooLarge {
                limit: limit as u64
            })
        );
        // Just under the limit: the buffer is never larger than the limit.
        let data = vec![7u8; limit - 1];
        let ok = read_limited(
            flate2::read::MultiGzDecoder::new(gzip(&data).as_slice()),
            "gzip",
            100,
            limit as u64,
            &mut |_| true,
        )
        .unwrap();
        assert!(
            ok.capacity() <= limit,
            "capacity {} > limit {limit}",
            ok.capacity()
        );
        out.extend(ok);
        assert_eq!(out, data);
    }

    #[test]
    fn growth_is_asked_for_and_can_be_refused() {
        let body = gzip(&vec![b'a'; 1_000_000]);
        let mut asked = Vec::new();
        let out = decode_within(Encoding::Gzip, &body, 2_000_000, &mut |n| {
            asked.push(n);
            true
        })
        .unwrap();
        assert!(asked.windows(2).all(|w| w[0] < w[1]), "{asked:?}");
        assert_eq!(asked.last(), Some(&out.capacity()));
        let refused = decode_within(Encoding::Gzip, &body, 2_000_000, &mut |n| n < 500_000);
        assert_eq!(refused, Err(DecodeError::Refused));
        assert_eq!(
            decode_within(Encoding::Identity, b"abc", 10, &mut |n| n < 3),
            Err(DecodeError::Refused)
        );
    }

    #[test]
    fn limits_and_corruption() {
        let bomb = gzip(&vec![b'a'; 1_000_000]);
        assert!(bomb.len() < 10_000);
        assert_eq!(
            decode(Encoding::Gzip, &bomb, 999_999),
            Err(DecodeError::TooLarge { limit: 999_999 })
        );
        assert_eq!(
            decode(Encoding::Gzip, &bomb, 1_000_000).unwrap().len(),
            1_000_000
        );
        assert!(matches!(
            decode(Encoding::Gzip, b"not gzip", 100),
            Err(DecodeError::Corrupt { .. })
        ));
        let truncated = &bomb[..bomb.len() / 2];
        assert!(matches!(
            decode(Encoding::Gzip, truncated, 10_000_000),
            Err(DecodeError::Corrupt { .. })
        ));
        assert_eq!(
            decode(Encoding::Identity, b"abc", 2),
            Err(DecodeError::TooLarge { limit: 2 })
        );
    }
}
