//! `type = "syslog"`: RFC 5424 messages, octet-counted (RFC 5425 over TLS,
//! RFC 6587 over TCP), to a syslog collector (rsyslog, syslog-ng, a SIEM's
//! agent).
//!
//! ```text
//! <110>1 2026-12-07T03:00:00.123Z host auditsink - cef - CEF:0|Kong|...
//! ```
//!
//! Facility 13 (log audit), severity 6 (informational); the timestamp is
//! the event's time; MSGID says the line's format; the message is the line
//! exactly as received (`payload = "raw"`) or the normalized event as JSON.
//! Syslog has no acknowledgement: a batch counts as delivered once it is
//! written to the connection (a collector that dies with it in its buffers
//! loses it; that is the protocol's limit).

use std::sync::Arc;
use std::time::Duration;

use std::io::Write;

use auditsink_parser::{LineFormat, Timestamp};
use auditsink_storage::{format_ms, ForwardEvent, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::{Payload, SinkConfig, Transport};
use super::connect::{connect_probed, host_port, tls_config, Peeked, Probe, Stream};
use super::destination::{local_hostname, Destination, ItemOutcome, SendFailure, SendFuture};

/// `<PRI>` of every message: facility 13 (log audit) × 8 + severity 6.
const PRI: &str = "<110>";

/// A syslog collector.
pub struct Syslog {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    hostname: String,
    payload: Payload,
    timeout: Duration,
    stream: Option<(Box<dyn Stream>, Probe)>,
    /// The frames of a batch, reused from batch to batch.
    frames: Vec<u8>,
}

impl Syslog {
    /// From the sink's configuration.
    pub fn new(config: &SinkConfig) -> Result<Syslog, String> {
        let address = config.address.as_deref().unwrap_or_default();
        let default_port = match config.transport {
            Transport::Tls => 6514,
            Transport::Tcp => 601,
        };
        let (host, port) = host_port(address, default_port)?;
        let tls = match config.transport {
            Transport::Tls => Some(tls_config(config.ca_file.as_deref(), config.insecure)?),
            Transport::Tcp => None,
        };
        Ok(Syslog {
            host,
            port,
            tls,
            hostname: header_token(&config.host.clone().unwrap_or_else(local_hostname), 255),
            payload: config.payload,
            timeout: Duration::from_secs(config.timeout_secs),
            stream: None,
            frames: Vec::new(),
        })
    }

    /// Appends one octet-counted frame, `LEN SP SYSLOG-MSG`, to `out`
    /// (the message is written in place, then its length put before it).
    pub fn frame(&self, event: &ForwardEvent, out: &mut Vec<u8>) -> Result<(), StoreError> {
        // Room for the length (a message is far below 10^10 bytes).
        const LEN_ROOM: usize = 10;
        let start = out.len();
        out.extend_from_slice(&[b' '; LEN_ROOM + 1]);
        let message = out.len();
        self.message(event, out)?;
        let mut room = [0u8; LEN_ROOM];
        let mut cursor = std::io::Cursor::new(&mut room[..]);
        // Fits: fewer than LEN_ROOM digits.
        let _ = write!(cursor, "{}", out.len() - message);
        let written = cursor.position() as usize;
        let digits = &room[..written];
        // Move the message left over the unused room.
        let gap = LEN_ROOM - digits.len();
        out[start..start + digits.len()].copy_from_slice(digits);
        out.copy_within(start + LEN_ROOM.., start + digits.len());
        out.truncate(out.len() - gap);
        Ok(())
    }

    fn message(&self, event: &ForwardEvent, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let msgid: &[u8] = match event.format() {
            LineFormat::Cef => b" auditsink - cef - ",
            LineFormat::Json => b" auditsink - json - ",
        };
        out.extend_from_slice(PRI.as_bytes());
        out.extend_from_slice(b"1 ");
        write_time(event.event_time_ms(), out);
        out.push(b' ');
        out.extend_from_slice(self.hostname.as_bytes());
        out.extend_from_slice(msgid);
        match self.payload {
            Payload::Raw => out.extend_from_slice(event.raw().as_bytes()),
            Payload::Json => event.write_json(out)?,
        }
        Ok(())
    }

    /// The open connection, checked for a close by the collector (an idle
    /// collector may have dropped it), or a new one.
    async fn stream(&mut self) -> Result<&mut Box<dyn Stream>, SendFailure> {
        if let Some((stream, probe)) = self.stream.as_mut() {
            // Collectors send nothing: a close (or junk) ends the connection.
            let closed = match probe.peek() {
                Peeked::Nothing => false,
                Peeked::Closed => true,
                Peeked::Bytes if self.tls.is_none() => true,
                // TLS records (a late session ticket, or a close_notify):
                // read through TLS, which keeps quiet about a ticket.
                Peeked::Bytes => {
                    let mut probe = [0u8; 512];
                    tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe))
                        .await
                        .is_ok()
                }
            };
            if closed {
                tracing::debug!("syslog collector closed the connection; reconnecting");
                probe.discard_waiting();
                self.stream = None;
            }
        }
        if self.stream.is_none() {
            let (stream, probe) = tokio::time::timeout(
                self.timeout,
                connect_probed(&self.host, self.port, self.tls.as_ref()),
            )
            .await
            .map_err(|_| {
                SendFailure::refused(format!("connecting: no answer within {:?}", self.timeout))
            })??;
            let mut stream = stream;
            // A TLS 1.3 collector sends its session tickets right after the
            // handshake. Read them now: bytes left unread in our receive
            // buffer would make the kernel reset the connection instead of
            // closing it if this process dies, and a reset throws away
            // what the collector has not read yet.
            let mut tickets = [0u8; 512];
            if let Ok(read) =
                tokio::time::timeout(Duration::from_millis(50), stream.read(&mut tickets)).await
            {
                tracing::debug!(?read, "syslog collector sent data after the handshake");
            }
            self.stream = Some((stream, probe));
        }
        Ok(&mut self.stream.as_mut().expect("set above").0)
    }
}

/// Appends RFC 3339 UTC with milliseconds (what [`format_ms`] writes),
/// without a string of its own in the common case.
pub(super) fn write_time(ms: i64, out: &mut Vec<u8>) {
    match Timestamp::from_epoch_ms(ms) {
        Some(time) => out.extend_from_slice(time.as_str().as_bytes()),
        None => out.extend_from_slice(format_ms(ms).as_bytes()),
    }
}

/// A header field: printable US-ASCII without spaces, at most `max` long
/// (RFC 5424's HOSTNAME), `-` when nothing is left.
fn header_token(text: &str, max: usize) -> String {
    let token: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if token.is_empty() {
        "-".to_owned()
    } else {
        token
    }
}

impl Destination for Syslog {
    fn send<'a>(&'a mut self, events: &'a [ForwardEvent]) -> SendFuture<'a> {
        Box::pin(async move {
            let mut frames = std::mem::take(&mut self.frames);
            frames.clear();
            for event in events {
                self.frame(event, &mut frames).map_err(SendFailure::store)?;
            }
            let timeout = self.timeout;
            let stream = self.stream().await?;
            let written = tokio::time::timeout(timeout, async {
                stream.write_all(&frames).await?;
                stream.flush().await
            })
            .await;
            self.frames = frames;
            match written {
                Ok(Ok(())) => Ok(vec![ItemOutcome::Delivered; events.len()]),
                Ok(Err(e)) => {
                    self.stream = None;
                    Err(SendFailure::unknown(format!(
                        "writing to the collector: {e}"
                    )))
                }
                Err(_) => {
                    self.stream = None;
                    Err(SendFailure::unknown(format!(
                        "writing to the collector: not done within {timeout:?}"
                    )))
                }
            }
        })
    }

    fn size_hint(&self, event: &ForwardEvent) -> usize {
        match self.payload {
            Payload::Raw => event.raw().len() + 96,
            Payload::Json => event.raw().len() * 2 + 256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditsink_parser::{parse_line, Format, ParseOptions};

    fn sink(payload: &str) -> Syslog {
        let config: crate::Config = crate::Config::from_toml(&format!(
            "[[sink]]\nname = \"s\"\ntype = \"syslog\"\naddress = \"127.0.0.1:601\"\n\
             transport = \"tcp\"\nhost = \"recv 1\"\npayload = \"{payload}\"\n"
        ))
        .unwrap();
        Syslog::new(&config.sinks[0]).unwrap()
    }

    /// `line` stored (source `konnect`), as a sink reads it.
    fn stored(line: &str) -> ForwardEvent {
        let dir = tempfile::tempdir().unwrap();
        let store = auditsink_storage::Store::open(dir.path()).unwrap();
        store
            .append_blocking(auditsink_storage::Batch {
                source: "konnect".into(),
                received_at_ms: 1_800_000_000_000,
                events: vec![
                    parse_line(line.as_bytes(), &ParseOptions::new(Format::Auto)).unwrap(),
                ],
                quarantine: Vec::new(),
            })
            .unwrap();
        // The record shares the chunk it was read from: it outlives the store.
        store.forward_events(0).unwrap().next().unwrap().unwrap()
    }

    #[test]
    fn frames_are_octet_counted_rfc5424_with_the_raw_line() {
        let line = "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1764100000123 n=é";
        let mut out = Vec::new();
        sink("raw").frame(&stored(line), &mut out).unwrap();
        let message = format!("<110>1 2025-11-25T19:46:40.123Z recv1 auditsink - cef - {line}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{} {message}", message.len())
        );
        // No event time: the receive time.
        let mut out = Vec::new();
        sink("raw")
            .frame(&stored("CEF:0|V|P|1|c|n|1|x=y"), &mut out)
            .unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains(" 2027-01-15T08:00:00.000Z "));
    }

    #[test]
    fn json_payload_is_the_normalized_event() {
        let mut out = Vec::new();
        sink("json")
            .frame(
                &stored(r#"{"rt":1764100000123,"name":"Authz.usage"}"#),
                &mut out,
            )
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let (len, message) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), message.len());
        let json = message.split_once(" json - ").unwrap().1;
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(value["name"], "Authz.usage");
        assert_eq!(value["source"], "konnect");
    }

    /// A sink to `address` over TCP.
    fn sink_to(address: std::net::SocketAddr) -> Syslog {
        let config: crate::Config = crate::Config::from_toml(&format!(
            "[[sink]]\nname = \"s\"\ntype = \"syslog\"\naddress = \"{address}\"\ntransport = \"tcp\"\n"
        ))
        .unwrap();
        Syslog::new(&config.sinks[0]).unwrap()
    }

    /// A collector listening, a sink to it that has sent it one batch of
    /// `events`, that batch's bytes, and the collector's end of the
    /// connection (nothing read from it yet).
    async fn one_batch_sent(
        events: &[ForwardEvent],
    ) -> (
        tokio::net::TcpListener,
        Syslog,
        Vec<u8>,
        tokio::net::TcpStream,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut sink = sink_to(listener.local_addr().unwrap());
        let mut frames = Vec::new();
        for event in events {
            sink.frame(event, &mut frames).unwrap();
        }
        let (sent, accepted) = tokio::join!(sink.send(events), listener.accept());
        assert_eq!(sent.unwrap(), vec![ItemOutcome::Delivered; events.len()]);
        (listener, sink, frames, accepted.unwrap().0)
    }

    #[test]
    fn a_connection_the_collector_closed_is_not_written_to() {
        use tokio::io::AsyncReadExt;
        let events = [stored("CEF:0|V|P|1|c|n|1|x=y")];
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            // The collector takes one batch, then closes the connection
            // (an idle timeout, a restart).
            let (listener, mut sink, frame, mut collector) = one_batch_sent(&events).await;
            let mut got = vec![0; frame.len()];
            collector.read_exact(&mut got).await.unwrap();
            assert_eq!(got, frame);
            drop(collector);
            tokio::time::sleep(Duration::from_millis(50)).await;

            // The next batch goes over a new connection, whole: written to
            // the closed one, it would be lost (the write succeeds; the
            // peer answers with a reset).
            let (sent, accepted) = tokio::join!(
                sink.send(&events),
                tokio::time::timeout(Duration::from_secs(5), listener.accept())
            );
            assert_eq!(sent.unwrap(), vec![ItemOutcome::Delivered]);
            let (mut collector, _) = accepted.expect("the sink connects again").unwrap();
            let mut got = vec![0; frame.len()];
            collector.read_exact(&mut got).await.unwrap();
            assert_eq!(got, frame);
        });
    }

    #[test]
    fn a_collector_that_sends_something_sees_a_close_not_a_reset() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let events = [stored("CEF:0|V|P|1|c|n|1|x=y")];
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            // The collector has not read the first batch yet when it sends
            // something (collectors should not): the sink reconnects.
            let (listener, mut sink, frame, mut first) = one_batch_sent(&events).await;
            first.write_all(b"unexpected\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (sent, accepted) = tokio::join!(sink.send(&events), listener.accept());
            assert_eq!(sent.unwrap(), vec![ItemOutcome::Delivered]);
            drop(accepted.unwrap());

            // The old connection ends with a FIN after the first batch: a
            // reset would have thrown away what the collector had not read.
            let mut got = Vec::new();
            first
                .read_to_end(&mut got)
                .await
                .expect("a close, not a reset");
            assert_eq!(got, frame);
        });
    }
}
