//! Connecting to NATS, and creating the stream or checking that the one
//! there has the settings this configuration needs.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::config::ClusterConfig;
use super::ClusterError;

/// How long startup waits for the first connection to a NATS server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most publish acknowledgements a receiver waits for at once (all
/// deliveries together); beyond, publishing waits for earlier ones.
const MAX_ACKS_IN_FLIGHT: usize = 20_000;

/// Connects with the configured credentials and TLS.
pub async fn connect(config: &ClusterConfig) -> Result<async_nats::Client, ClusterError> {
    let mut options = async_nats::ConnectOptions::new()
        .name("auditsink")
        .connection_timeout(CONNECT_TIMEOUT)
        // Reconnect without end: a NATS outage is answered with 500s, and
        // the receiver must come back by itself when the cluster does.
        .max_reconnects(None);
    if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| ClusterError::Credentials {
                path: path.clone(),
                message: e.to_string(),
            })?;
    }
    if let Some(variable) = &config.token_env {
        let token =
            std::env::var(variable).map_err(|_| ClusterError::MissingToken(variable.clone()))?;
        options = options.token(token);
    }
    if let Some(ca) = &config.ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let urls = config.nats_urls.join(",");
    tokio::time::timeout(CONNECT_TIMEOUT, options.connect(config.nats_urls.clone()))
        .await
        .map_err(|_| ClusterError::Connect {
            urls: urls.clone(),
            message: format!("no server answered within {CONNECT_TIMEOUT:?}"),
        })?
        .map_err(|e| ClusterError::Connect {
            urls,
            message: e.to_string(),
        })
}

/// A JetStream context whose requests (and each publish attempt's
/// acknowledgement) time out after [`attempt_timeout`].
pub fn context(client: async_nats::Client, config: &ClusterConfig) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(attempt_timeout(config))
        .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
        .build(client)
}

/// The stream this configuration describes.
pub fn stream_config(config: &ClusterConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        subjects: vec![config.stream_subjects()],
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        // Kept as long as ids are remembered: an indexer that was away for
        // less than that finds every message it missed.
        max_age: config.duplicate_window,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        description: Some("auditsink: audit-log events and quarantined lines".to_owned()),
        ..Default::default()
    }
}

/// Creates the stream, or checks the existing one; a mismatch is an error
/// that names each difference.
pub async fn ensure(
    context: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<stream::Stream, ClusterError> {
    let wanted = stream_config(config);
    let mut existing = match context.get_stream(&config.stream).await {
        Ok(stream) => stream,
        Err(e) if is_not_found(&e) => match context.create_stream(wanted.clone()).await {
            Ok(stream) => {
                tracing::info!(stream = %config.stream, replicas = config.replicas, "created the JetStream stream");
                return Ok(stream);
            }
            // Another process created it meanwhile: check that one.
            Err(_) => {
                context
                    .get_stream(&config.stream)
                    .await
                    .map_err(|e| ClusterError::Stream {
                        stream: config.stream.clone(),
                        message: e.to_string(),
                    })?
            }
        },
        Err(e) => {
            return Err(ClusterError::Stream {
                stream: config.stream.clone(),
                message: e.to_string(),
            })
        }
    };
    let info = existing.info().await.map_err(|e| ClusterError::Stream {
        stream: config.stream.clone(),
        message: e.to_string(),
    })?;
    let differences = differences(&wanted, &info.config);
    if differences.is_empty() {
        Ok(existing)
    } else {
        Err(ClusterError::Mismatch {
            stream: config.stream.clone(),
            differences: differences.join("; "),
        })
    }
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// What the existing stream has that this configuration does not want.
pub fn differences(wanted: &stream::Config, actual: &stream::Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |what: &str, wanted: String, actual: String| {
        if wanted != actual {
            out.push(format!(
                "{what}: configured {wanted}, the stream has {actual}"
            ));
        }
    };
    differ(
        "subjects",
        format!("{:?}", wanted.subjects),
        format!("{:?}", actual.subjects),
    );
    differ(
        "replicas",
        wanted.num_replicas.to_string(),
        actual.num_replicas.to_string(),
    );
    differ(
        "duplicate_window",
        format!("{:?}", wanted.duplicate_window),
        format!("{:?}", actual.duplicate_window),
    );
    differ(
        "max_age",
        format!("{:?}", wanted.max_age),
        format!("{:?}", actual.max_age),
    );
    differ(
        "storage",
        format!("{:?}", wanted.storage),
        format!("{:?}", actual.storage),
    );
    differ(
        "retention",
        format!("{:?}", wanted.retention),
        format!("{:?}", actual.retention),
    );
    out
}

/// How long one publish waits for its acknowledgement before it is sent
/// again (same message id): a message sent to a stream leader that died
/// just then is never acknowledged, and the retry reaches the new leader.
/// A quarter of `ack_timeout`, between 250 ms and 2 s.
pub fn attempt_timeout(config: &ClusterConfig) -> Duration {
    (config.ack_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(2))
}
