//! Reading a request body within the size and time limits, keeping what
//! arrived when the framing breaks (so it can go to quarantine), and
//! remembering how far the reading got (so an early answer can linger).

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes};

/// How far a body was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing read yet (an answer before the body: auth, routing, 429...).
    Unread,
    /// Reading stopped at the size limit; more may be coming.
    Stopped,
    /// Read to its end.
    Ended,
    /// The client was too slow (408); nothing more is worth waiting for.
    TimedOut,
    /// The stream failed (framing error, client gone).
    Broken,
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    /// More than the limit (413).
    TooLarge,
    /// Not received in time (408).
    TimedOut,
    /// The HTTP/1.1 framing is malformed (a bad chunk size line, a chunk
    /// longer than announced): a retry would send the same bytes. What
    /// arrived before the error, and the error.
    Malformed { received: Vec<u8>, error: String },
    /// The client went away or reset the stream mid-body; nobody reads an
    /// answer and the sender will retry.
    Aborted { error: String },
}

/// A request body and how far it was read.
pub struct RequestBody<B> {
    inner: B,
    progress: Progress,
    read: u64,
}

impl<B> RequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    /// A body not read yet.
    pub fn new(inner: B) -> RequestBody<B> {
        RequestBody {
            inner,
            progress: Progress::Unread,
            read: 0,
        }
    }

    /// How far it was read.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// Whether nothing more will come: read to its end or broken, or empty.
    pub fn is_finished(&self) -> bool {
        matches!(self.progress, Progress::Ended | Progress::Broken) || self.inner.is_end_stream()
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// The underlying body, to discard what remains of it.
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// Reads the whole body: at most `limit` bytes, within `timeout`.
    /// `declared` (the `Content-Length`, if any) sizes the buffer.
    pub async fn read_all(
        &mut self,
        limit: u64,
        timeout: Duration,
        declared: Option<u64>,
    ) -> Result<Bytes, ReadError> {
        let capacity = declared.unwrap_or(0).min(limit).min(1 << 20);
        let mut received = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.inner.frame()).await {
                Err(_) => {
                    self.progress = Progress::TimedOut;
                    return Err(ReadError::TimedOut);
                }
                Ok(None) => {
                    self.progress = Progress::Ended;
                    return Ok(Bytes::from(received));
                }
                Ok(Some(Err(e))) => {
                    self.progress = Progress::Broken;
                    let error = error_chain(&e);
                    return Err(if is_malformed(&e) {
                        ReadError::Malformed { received, error }
                    } else {
                        ReadError::Aborted { error }
                    });
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers: nothing to keep
            };
            self.read += data.len() as u64;
            if self.read > limit {
                self.progress = Progress::Stopped;
                return Err(ReadError::TooLarge);
            }
            received.extend_from_slice(&data);
        }
    }
}

/// The error and its causes, `: `-separated, each once.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether the body broke on its framing (hyper's HTTP/1.1 decoder reports
/// that as an `InvalidInput` or `InvalidData` I/O error), rather than on the
/// client going away (`UnexpectedEof`, a reset, an incomplete message).
fn is_malformed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            );
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper::body::Frame;

    /// Chunks, then an error of this kind (or the end).
    struct Scripted {
        chunks: Vec<&'static [u8]>,
        error: Option<std::io::ErrorKind>,
    }

    impl Body for Scripted {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if !self.chunks.is_empty() {
                let chunk = self.chunks.remove(0);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(chunk)))));
            }
            Poll::Ready(
                self.error
                    .take()
                    .map(|kind| Err(std::io::Error::new(kind, "invalid chunk size line"))),
            )
        }
    }

    async fn read(body: Scripted, limit: u64) -> (Result<Bytes, ReadError>, Progress) {
        let mut body = RequestBody::new(body);
        let result = body.read_all(limit, Duration::from_secs(5), None).await;
        (result, body.progress())
    }

    #[tokio::test]
    async fn a_whole_body() {
        let body = Scripted {
            chunks: vec![b"ab", b"cd"],
            error: None,
        };
        let (result, progress) = read(body, 10).await;
        assert_eq!(result.unwrap(), Bytes::from_static(b"abcd"));
        assert_eq!(progress, Progress::Ended);
    }

    #[tokio::test]
    async fn too_large_stops_reading() {
        let body = Scripted {
            chunks: vec![b"abc", b"def", b"ghi"],
            error: None,
        };
        let (result, progress) = read(body, 5).await;
        assert!(matches!(result, Err(ReadError::TooLarge)));
        assert_eq!(progress, Progress::Stopped);
    }

    #[tokio::test]
    async fn malformed_framing_keeps_what_arrived() {
        let body = Scripted {
            chunks: vec![b"line one\n", b"line t"],
            error: Some(std::io::ErrorKind::InvalidInput),
        };
        let (result, progress) = read(body, 100).await;
        match result {
            Err(ReadError::Malformed { received, error }) => {
                assert_eq!(received, b"line one\nline t");
                assert!(error.contains("invalid chunk size line"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(progress, Progress::Broken);
    }

    #[tokio::test]
    async fn a_client_gone_midway_is_not_malformed() {
        let body = Scripted {
            chunks: vec![b"abc"],
            error: Some(std::io::ErrorKind::UnexpectedEof),
        };
        let (result, _) = read(body, 100).await;
        assert!(
            matches!(result, Err(ReadError::Aborted { .. })),
            "{result:?}"
        );
    }
}
