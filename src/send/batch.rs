//! Lines into newline-separated batches, and a batch's body as sent: gzip
//! with the chosen `Content-Encoding` label, or as is.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use hyper::body::Bytes;

/// Lines to deliver (without terminators), in order.
pub type Lines = Box<dyn Iterator<Item = anyhow::Result<Vec<u8>>> + Send>;

/// How the body is encoded, and the `Content-Encoding` label it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// gzip, labelled with this `Content-Encoding`.
    Gzip(&'static str),
    /// As is, without `Content-Encoding`.
    Identity,
}

impl BodyEncoding {
    /// Reads `--encoding`.
    pub fn parse(text: &str) -> Result<BodyEncoding, String> {
        match text {
            "application/gzip" => Ok(BodyEncoding::Gzip("application/gzip")),
            "gzip" => Ok(BodyEncoding::Gzip("gzip")),
            "x-gzip" => Ok(BodyEncoding::Gzip("x-gzip")),
            "identity" => Ok(BodyEncoding::Identity),
            other => Err(format!(
                "{other:?}: use application/gzip (Konnect's label), gzip, x-gzip or identity"
            )),
        }
    }

    /// The `Content-Encoding` header value, if any.
    pub fn header(self) -> Option<&'static str> {
        match self {
            BodyEncoding::Gzip(label) => Some(label),
            BodyEncoding::Identity => None,
        }
    }

    /// The body of `plain`.
    pub fn encode(self, plain: &[u8]) -> Bytes {
        match self {
            BodyEncoding::Identity => Bytes::copy_from_slice(plain),
            BodyEncoding::Gzip(_) => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(plain.len() / 4),
                    flate2::Compression::default(),
                );
                // Writing into a Vec cannot fail.
                let _ = encoder.write_all(plain);
                Bytes::from(encoder.finish().unwrap_or_default())
            }
        }
    }
}

/// One batch: `events` lines joined by `\n`, and the encoded body once made.
pub struct Batch {
    /// 1 for the first batch of the input.
    pub number: u64,
    pub events: u64,
    pub plain: Bytes,
    pub body: Option<Bytes>,
}

impl Batch {
    /// The input bytes its lines took (each with its line end).
    pub fn input_bytes(&self) -> u64 {
        self.plain.len() as u64 + 1
    }

    /// The body to send, encoded now unless it was before.
    pub fn body(&self, encoding: BodyEncoding) -> Bytes {
        match &self.body {
            Some(body) => body.clone(),
            None => encoding.encode(&self.plain),
        }
    }
}

/// Collects lines into batches of a fixed size.
struct Batcher {
    size: u64,
    plain: Vec<u8>,
    events: u64,
    number: u64,
}

impl Batcher {
    fn new(size: usize) -> Batcher {
        Batcher {
            size: size as u64,
            plain: Vec::new(),
            events: 0,
            number: 0,
        }
    }

    /// Adds a line; the batch when it is now full.
    fn push(&mut self, line: &[u8]) -> Option<Batch> {
        if self.events > 0 {
            self.plain.push(b'\n');
        }
        self.plain.extend_from_slice(line);
        self.events += 1;
        (self.events == self.size).then(|| self.take())
    }

    /// The lines so far as a batch, if any.
    fn flush(&mut self) -> Option<Batch> {
        (self.events > 0).then(|| self.take())
    }

    /// Adds a line read from the input (counted in `read`) and hands a
    /// full batch to `sink`; false once `sink` says stop.
    fn feed(
        &mut self,
        line: &[u8],
        read: &AtomicU64,
        sink: &mut impl FnMut(Batch) -> bool,
    ) -> bool {
        read.fetch_add(1, Ordering::Relaxed);
        self.push(line).map_or(true, sink)
    }

    /// Hands the last, partial batch to `sink`.
    fn finish(mut self, mut sink: impl FnMut(Batch) -> bool) {
        if let Some(batch) = self.flush() {
            sink(batch);
        }
    }

    fn take(&mut self) -> Batch {
        self.number += 1;
        let batch = Batch {
            number: self.number,
            events: self.events,
            plain: Bytes::from(std::mem::take(&mut self.plain)),
            body: None,
        };
        self.events = 0;
        batch
    }
}

/// Groups `lines` into batches of `size` and hands each to `sink` (which
/// returns false to stop); counts the lines read in `read`.
pub fn batch_lines(
    lines: Lines,
    size: usize,
    read: &AtomicU64,
    mut sink: impl FnMut(Batch) -> bool,
) -> anyhow::Result<()> {
    let mut batcher = Batcher::new(size);
    for line in lines {
        if !batcher.feed(&line?, read, &mut sink) {
            return Ok(());
        }
    }
    batcher.finish(sink);
    Ok(())
}

/// As [`batch_lines`], for an input that may pause (a pipe fed as events
/// happen): a partial batch is handed over once no line came for `linger`,
/// so lines do not wait for a batch to fill. The lines are read on their
/// own thread, which is left behind if the input never ends.
pub fn batch_lines_lingering(
    lines: Lines,
    size: usize,
    linger: Duration,
    read: &AtomicU64,
    mut sink: impl FnMut(Batch) -> bool,
) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel(size.clamp(1, 65_536));
    std::thread::spawn(move || {
        for line in lines {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut batcher = Batcher::new(size);
    loop {
        let line = if batcher.events > 0 {
            match rx.recv_timeout(linger) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(batch) = batcher.flush() {
                        if !sink(batch) {
                            return Ok(());
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(line) => line,
                Err(_) => break,
            }
        };
        if !batcher.feed(&line?, read, &mut sink) {
            return Ok(());
        }
    }
    batcher.finish(sink);
    Ok(())
}

/// Encodes every batch, on all cores.
pub fn encode_all(batches: &mut [Batch], encoding: BodyEncoding) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = batches.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for part in batches.chunks_mut(per_thread) {
            scope.spawn(move || {
                for batch in part {
                    batch.body = Some(encoding.encode(&batch.plain));
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn batches_split_lines() {
        let lines: Lines = Box::new((0..7).map(|i| Ok(format!("l{i}").into_bytes())));
        let read = AtomicU64::new(0);
        let mut got = Vec::new();
        batch_lines(lines, 3, &read, |b| {
            got.push((
                b.number,
                b.events,
                String::from_utf8(b.plain.to_vec()).unwrap(),
            ));
            true
        })
        .unwrap();
        assert_eq!(
            got,
            [
                (1, 3, "l0\nl1\nl2".to_owned()),
                (2, 3, "l3\nl4\nl5".to_owned()),
                (3, 1, "l6".to_owned())
            ]
        );
        assert_eq!(read.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn a_pause_in_the_input_hands_over_a_partial_batch() {
        let (tx, rx) = std::sync::mpsc::channel::<anyhow::Result<Vec<u8>>>();
        let lines: Lines = Box::new(rx.into_iter());
        std::thread::spawn(move || {
            for i in 0..3 {
                tx.send(Ok(format!("l{i}").into_bytes())).unwrap();
            }
            std::thread::sleep(Duration::from_millis(300));
            tx.send(Ok(b"l3".to_vec())).unwrap();
        });
        let read = AtomicU64::new(0);
        let mut got = Vec::new();
        batch_lines_lingering(lines, 10, Duration::from_millis(50), &read, |b| {
            got.push(String::from_utf8(b.plain.to_vec()).unwrap());
            true
        })
        .unwrap();
        assert_eq!(got, ["l0\nl1\nl2", "l3"]);
        assert_eq!(read.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn gzip_bodies_gunzip_to_the_batch() {
        for label in ["application/gzip", "gzip", "x-gzip"] {
            let encoding = BodyEncoding::parse(label).unwrap();
            assert_eq!(encoding.header(), Some(label));
            let body = encoding.encode(b"a\nb");
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain, b"a\nb");
        }
        let identity = BodyEncoding::parse("identity").unwrap();
        assert_eq!(identity.header(), None);
        assert_eq!(&identity.encode(b"a\nb")[..], b"a\nb");
        assert!(BodyEncoding::parse("deflate").is_err());
    }
}
