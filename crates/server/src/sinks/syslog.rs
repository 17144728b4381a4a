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

use auditsink_parser::LineFormat;
use auditsink_storage::{format_ms, StoredEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::{Payload, SinkConfig, Transport};
use super::connect::{connect, host_port, tls_config, Stream};
use super::destination::{
    event_time_ms, local_hostname, Destination, ItemOutcome, SendFailure, SendFuture,
};

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
    stream: Option<Box<dyn Stream>>,
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
        })
    }

    /// One octet-counted frame: `LEN SP SYSLOG-MSG`.
    pub fn frame(&self, event: &StoredEvent, out: &mut Vec<u8>) {
        let message = self.message(event);
        out.extend_from_slice(message.len().to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(&message);
    }

    fn message(&self, event: &StoredEvent) -> Vec<u8> {
        let msgid = match event.event.format {
            LineFormat::Cef => "cef",
            LineFormat::Json => "json",
        };
        let mut out = format!(
            "{PRI}1 {} {} auditsink - {msgid} - ",
            format_ms(event_time_ms(event)),
            self.hostname
        )
        .into_bytes();
        match self.payload {
            Payload::Raw => out.extend_from_slice(event.event.raw.as_bytes()),
            Payload::Json => out.extend_from_slice(event.to_json().to_string().as_bytes()),
        }
        out
    }

    /// The open connection, checked for a close by the collector (an idle
    /// collector may have dropped it), or a new one.
    async fn stream(&mut self) -> Result<&mut Box<dyn Stream>, SendFailure> {
        if let Some(stream) = self.stream.as_mut() {
            let mut probe = [0u8; 512];
            // Collectors send nothing: a ready read is a close (or junk).
            if let Ok(read) =
                tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
            {
                tracing::debug!(
                    ?read,
                    "syslog collector closed the connection; reconnecting"
                );
                self.stream = None;
            }
        }
        if self.stream.is_none() {
            let stream = tokio::time::timeout(
                self.timeout,
                connect(&self.host, self.port, self.tls.as_ref()),
            )
            .await
            .map_err(|_| {
                SendFailure::refused(format!("connecting: no answer within {:?}", self.timeout))
            })?
            .map_err(SendFailure::refused)?;
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
            self.stream = Some(stream);
        }
        Ok(self.stream.as_mut().expect("set above"))
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
    fn send<'a>(&'a mut self, events: &'a [StoredEvent]) -> SendFuture<'a> {
        Box::pin(async move {
            let mut frames = Vec::with_capacity(events.len() * 512);
            for event in events {
                self.frame(event, &mut frames);
            }
            let timeout = self.timeout;
            let stream = self.stream().await?;
            let written = tokio::time::timeout(timeout, async {
                stream.write_all(&frames).await?;
                stream.flush().await
            })
            .await;
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

    fn size_hint(&self, event: &StoredEvent) -> usize {
        match self.payload {
            Payload::Raw => event.event.raw.len() + 96,
            Payload::Json => event.event.raw.len() * 2 + 256,
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

    fn stored(line: &str) -> StoredEvent {
        StoredEvent {
            id: 7,
            received_at_ms: 1_800_000_000_000,
            source: "konnect".into(),
            event: parse_line(line.as_bytes(), &ParseOptions::new(Format::Auto)).unwrap(),
        }
    }

    #[test]
    fn frames_are_octet_counted_rfc5424_with_the_raw_line() {
        let line = "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1764100000123 n=é";
        let mut out = Vec::new();
        sink("raw").frame(&stored(line), &mut out);
        let message = format!("<110>1 2025-11-25T19:46:40.123Z recv1 auditsink - cef - {line}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{} {message}", message.len())
        );
        // No event time: the receive time.
        let mut out = Vec::new();
        sink("raw").frame(&stored("CEF:0|V|P|1|c|n|1|x=y"), &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains(" 2027-01-15T08:00:00.000Z "));
    }

    #[test]
    fn json_payload_is_the_normalized_event() {
        let mut out = Vec::new();
        sink("json").frame(
            &stored(r#"{"rt":1764100000123,"name":"Authz.usage"}"#),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let (len, message) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), message.len());
        let json = message.split_once(" json - ").unwrap().1;
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(value["name"], "Authz.usage");
        assert_eq!(value["source"], "konnect");
    }
}
