//! Lingering close, as nginx does it (`lingering_close`, `lingering_time`,
//! `lingering_timeout`): after a final answer sent before the request body
//! was read (401, 404, 405, 413, 415, 429), the rest of the body is read and
//! discarded, within bounds, so that the client can finish sending and read
//! the answer.
//!
//! Without it the answer is lost on common clients: over HTTP/1.1 a client
//! that writes its whole body before reading (Python's `http.client`) has
//! its connection reset by the unread bytes, so it sees an EOF or a reset
//! instead of the status; over h2 the stream is cancelled (`RST_STREAM`)
//! while curl is still sending, and curl reports a framing-layer error.
//! Konnect retries a connection error but not a 401 or a 413, so the
//! difference decides what happens to the batch.
//!
//! After the discarding, hyper closes the HTTP/1.1 connection (the answer
//! says `Connection: close`) or ends the h2 stream; past a bound it closes
//! at once (over h2 with `RST_STREAM(NO_ERROR)`, after the complete answer).

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::config::Limits;

/// Bounds on what one lingering close may read and how long it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lingering {
    /// Most body bytes read and discarded; 0: no lingering.
    pub max_bytes: u64,
    /// Longest the discarding may last in all.
    pub time: Duration,
    /// Longest wait for the next bytes.
    pub timeout: Duration,
}

impl From<&Limits> for Lingering {
    fn from(l: &Limits) -> Self {
        Lingering {
            max_bytes: l.lingering_max_bytes,
            time: Duration::from_secs(l.lingering_time_secs),
            timeout: Duration::from_secs(l.lingering_timeout_secs),
        }
    }
}

/// Why the discarding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client sent the whole body (or closed, or reset the stream).
    Finished,
    /// `max_bytes` read and more coming.
    TooMuch,
    /// `time` or `timeout` passed.
    TimedOut,
}

impl Lingering {
    /// Reads and discards `body` in a task of its own (the answer goes out
    /// meanwhile), then drops it, which lets hyper close or end the stream.
    pub fn spawn(self, body: Incoming, already_read: u64) {
        if self.max_bytes == 0 || self.time.is_zero() {
            return;
        }
        tokio::spawn(async move {
            let started = Instant::now();
            let (ended, discarded) = self.discard(body).await;
            tracing::debug!(
                ?ended,
                discarded,
                already_read,
                ms = started.elapsed().as_millis() as u64,
                "lingering close done"
            );
        });
    }

    /// Reads `body` to its end or to a bound; what ended it and the bytes read.
    pub async fn discard<B>(self, mut body: B) -> (Ended, u64)
    where
        B: hyper::body::Body + Unpin,
    {
        let deadline = Instant::now() + self.time;
        let mut discarded = 0u64;
        loop {
            let next = deadline.min(Instant::now() + self.timeout);
            match tokio::time::timeout_at(next, body.frame()).await {
                Err(_) => return (Ended::TimedOut, discarded),
                Ok(None | Some(Err(_))) => return (Ended::Finished, discarded),
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        discarded += hyper::body::Buf::remaining(data) as u64;
                    }
                    if discarded >= self.max_bytes {
                        return (Ended::TooMuch, discarded);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper::body::{Bytes, Frame};

    /// Some chunks of 1000 bytes, then the end or silence.
    struct Chunks {
        left: usize,
        then_silence: bool,
    }

    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.left == 0 {
                return if self.then_silence {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                };
            }
            self.left -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0u8; 1000])))))
        }
    }

    fn bounds(max_bytes: u64) -> Lingering {
        Lingering {
            max_bytes,
            time: Duration::from_secs(5),
            timeout: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn reads_to_the_end_within_the_bounds() {
        let body = Chunks {
            left: 10,
            then_silence: false,
        };
        assert_eq!(
            bounds(1 << 20).discard(body).await,
            (Ended::Finished, 10_000)
        );
    }

    #[tokio::test]
    async fn stops_at_the_byte_bound() {
        let body = Chunks {
            left: 10,
            then_silence: false,
        };
        assert_eq!(bounds(2500).discard(body).await, (Ended::TooMuch, 3000));
    }

    #[tokio::test]
    async fn stops_when_the_client_goes_quiet() {
        let body = Chunks {
            left: 3,
            then_silence: true,
        };
        let started = Instant::now();
        assert_eq!(bounds(1 << 20).discard(body).await, (Ended::TimedOut, 3000));
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
