//! `[cluster]`: where the NATS JetStream cluster is and how the stream is
//! set up. Absent, auditsink runs on its embedded store alone.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[cluster]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:4222` or `tls://host:4222`); the
    /// client connects to one and fails over to the others.
    pub nats_urls: Vec<String>,
    /// A NATS credentials file (JWT and NKey seed).
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// An environment variable holding a NATS token, instead.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A PEM CA to trust for the servers' certificates; set, TLS is required.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The JetStream stream's name.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// First token of the stream's subjects: events go to
    /// `<subject_prefix>.<source>.events`, quarantined lines to
    /// `<subject_prefix>.<source>.quarantine`.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// Copies of each message the stream keeps (3 survives the loss of one
    /// node; 1 for a single NATS server).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long the stream remembers a message id, so that a resent event
    /// is acknowledged as a duplicate and not stored again (`8d`: Konnect's
    /// replay jobs reach 7 days back). Also how long the stream keeps
    /// messages: an indexer must catch up within it.
    #[serde(default = "default_duplicate_window", with = "duration_text")]
    pub duplicate_window: Duration,
    /// The longest a receiver waits for a batch's acknowledgements before
    /// answering 500 (Konnect retries it).
    #[serde(default = "default_ack_timeout", with = "duration_text")]
    pub ack_timeout: Duration,
    /// The indexer's durable consumer name: indexers with distinct names
    /// each read the whole stream (one full copy each).
    #[serde(default = "default_durable")]
    pub durable: String,
}

fn default_stream() -> String {
    "AUDITSINK".to_owned()
}
fn default_subject_prefix() -> String {
    "auditsink".to_owned()
}
fn default_replicas() -> usize {
    3
}
fn default_duplicate_window() -> Duration {
    Duration::from_secs(8 * 24 * 3600)
}
fn default_ack_timeout() -> Duration {
    // Above a stream leader election after a node is lost (about 4 s
    // measured on loopback), so that losing one node is not a 500.
    Duration::from_secs(10)
}
fn default_durable() -> String {
    "indexer".to_owned()
}

impl ClusterConfig {
    /// Checks what would fail later with a worse message.
    pub fn validate(&self) -> Result<(), String> {
        if self.nats_urls.is_empty() {
            return Err("[cluster] nats_urls must list at least one NATS server".into());
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!(
                "[cluster] replicas must be 1 to 5 (JetStream's limit), not {}",
                self.replicas
            ));
        }
        if self.creds_file.is_some() && self.token_env.is_some() {
            return Err("[cluster] give creds_file or token_env, not both".into());
        }
        for (key, name) in [
            ("stream", &self.stream),
            ("subject_prefix", &self.subject_prefix),
            ("durable", &self.durable),
        ] {
            if !is_name(name) {
                return Err(format!(
                    "[cluster] {key} {name:?}: use letters, digits, `-` and `_` only"
                ));
            }
        }
        if self.ack_timeout.is_zero() {
            return Err("[cluster] ack_timeout must be more than 0".into());
        }
        if self.duplicate_window < Duration::from_secs(1) {
            return Err("[cluster] duplicate_window must be at least 1s".into());
        }
        Ok(())
    }

    /// The subjects the stream holds.
    pub fn stream_subjects(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// The subject of `source`'s events (`kind` `events` or `quarantine`).
    pub fn subject(&self, source: &str, kind: &str) -> String {
        format!("{}.{}.{kind}", self.subject_prefix, subject_token(source))
    }
}

/// A stream, subject token or consumer name that NATS takes as it is.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A source name as one subject token: bytes a subject cannot hold (`.`,
/// `*`, `>`, whitespace, non-ASCII) become `_`. The message itself carries
/// the exact name.
fn subject_token(source: &str) -> String {
    let token: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if token.is_empty() {
        "_".to_owned()
    } else {
        token
    }
}

/// Durations written as text: a number and a unit, `ms`, `s`, `m`, `h` or
/// `d` (`500ms`, `5s`, `8d`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration: write a number and a unit, ms, s, m, h or d (e.g. 5s, 8d)"
            ))
        })
    }

    pub fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().ok()?;
        let millis_per = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        Some(Duration::from_millis(number.checked_mul(millis_per)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, String> {
        let config: ClusterConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map(|()| config)
    }

    #[test]
    fn defaults_and_durations() {
        let config = parse("nats_urls = [\"nats://127.0.0.1:4222\"]").unwrap();
        assert_eq!(config.stream, "AUDITSINK");
        assert_eq!(config.replicas, 3);
        assert_eq!(config.duplicate_window, Duration::from_secs(8 * 86_400));
        assert_eq!(config.ack_timeout, Duration::from_secs(10));
        assert_eq!(
            config.subject("eu.prod", "events"),
            "auditsink.eu_prod.events"
        );
        let config =
            parse("nats_urls = [\"n\"]\nack_timeout = \"1500ms\"\nduplicate_window = \"2h\"")
                .unwrap();
        assert_eq!(config.ack_timeout, Duration::from_millis(1500));
        assert_eq!(config.duplicate_window, Duration::from_secs(7200));
    }

    #[test]
    fn refuses_what_cannot_work() {
        for bad in [
            "nats_urls = []",
            "nats_urls = [\"n\"]\nreplicas = 0",
            "nats_urls = [\"n\"]\nreplicas = 7",
            "nats_urls = [\"n\"]\nstream = \"A.B\"",
            "nats_urls = [\"n\"]\nack_timeout = \"5\"",
            "nats_urls = [\"n\"]\nack_timeout = \"0s\"",
            "nats_urls = [\"n\"]\ncreds_file = \"c\"\ntoken_env = \"T\"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
