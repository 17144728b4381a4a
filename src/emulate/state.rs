//! What the emulated Konnect knows: the org webhook, the Dev Portal
//! webhooks and their audit-log destinations, each delivery channel's
//! status, replay job and generated events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use auditsink_parser::signature::SigningKeyPair;

pub use super::generated::Generated;
use super::ledger::Ledger;
use super::Settings;
use crate::simulate::{LiveEvents, OutputFormat};

/// Locks, going on after a panic elsewhere (the data stays consistent:
/// every update is one assignment).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Konnect's `log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Cef,
    Json,
}

impl LogFormat {
    pub fn parse(text: &str) -> Option<LogFormat> {
        match text {
            "cef" => Some(LogFormat::Cef),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Cef => "cef",
            LogFormat::Json => "json",
        }
    }

    pub fn output(self) -> OutputFormat {
        match self {
            LogFormat::Cef => OutputFormat::Cef,
            LogFormat::Json => OutputFormat::Json,
        }
    }
}

/// Where and how to deliver: the org webhook's settings, or a Dev Portal
/// audit-log destination's.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: String,
    pub authorization: Option<String>,
    pub log_format: LogFormat,
    pub skip_ssl_verification: bool,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            endpoint: String::new(),
            authorization: None,
            log_format: LogFormat::Cef,
            skip_ssl_verification: false,
        }
    }
}

/// The org audit-log webhook.
#[derive(Debug, Clone, Default)]
pub struct OrgWebhook {
    pub target: Target,
    pub enabled: bool,
    pub updated_ms: Option<i64>,
}

/// A Dev Portal's audit-log webhook: it points at a destination.
#[derive(Debug, Clone, Default)]
pub struct PortalWebhook {
    pub destination_id: Option<String>,
    pub enabled: bool,
    pub updated_ms: Option<i64>,
}

/// A Dev Portal audit-log destination.
#[derive(Debug, Clone)]
pub struct Destination {
    pub id: String,
    pub name: String,
    pub target: Target,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A replay job's status, as Konnect names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Accepted,
    Pending,
    Running,
    Completed,
    Failed,
}

impl JobStatus {
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Accepted => "accepted",
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }

    /// Whether the job is still under way (a second one is refused).
    pub fn under_way(self) -> bool {
        matches!(
            self,
            JobStatus::Accepted | JobStatus::Pending | JobStatus::Running
        )
    }
}

/// A replay job.
#[derive(Debug, Clone)]
pub struct Job {
    pub start_ms: i64,
    pub end_ms: i64,
    pub status: JobStatus,
    pub updated_ms: i64,
}

/// What the last delivery attempt of a channel gave.
#[derive(Debug, Clone, Default)]
pub struct DeliveryStatus {
    pub last_attempt_ms: Option<i64>,
    /// 0: no HTTP answer (connection error or timeout).
    pub last_response_code: Option<u16>,
}

/// The org webhook or one Dev Portal's: what it generated and delivered.
pub struct Channel {
    /// `None` for the org's audit logs.
    pub portal: Option<String>,
    pub delivery: Mutex<DeliveryStatus>,
    pub job: Mutex<Option<Job>>,
    pub history: Mutex<VecDeque<Generated>>,
    pub events: Mutex<LiveEvents>,
    /// When the next event is due (ms since the epoch), while enabled.
    pub next_due_ms: Mutex<Option<f64>>,
}

impl Channel {
    fn new(seed: u64, portal: Option<String>) -> Channel {
        Channel {
            events: Mutex::new(LiveEvents::new(seed, portal.clone())),
            portal,
            delivery: Mutex::default(),
            job: Mutex::default(),
            history: Mutex::default(),
            next_due_ms: Mutex::default(),
        }
    }

    /// `org` or `portal:<id>`, in the ledger.
    pub fn name(&self) -> String {
        match &self.portal {
            None => "org".into(),
            Some(id) => format!("portal:{id}"),
        }
    }

    /// Konnect's `Content-Type` for this channel's batches.
    pub fn content_type(&self) -> &'static str {
        match self.portal {
            None => "application/text",
            Some(_) => "text/plain",
        }
    }

    /// Records an attempt.
    pub fn attempted(&self, at_ms: i64, code: u16) {
        let mut delivery = lock(&self.delivery);
        delivery.last_attempt_ms = Some(at_ms);
        delivery.last_response_code = Some(code);
    }
}

/// The whole emulated Konnect.
pub struct Emulator {
    pub settings: Settings,
    pub key: SigningKeyPair,
    pub ledger: Ledger,
    pub org: Mutex<OrgWebhook>,
    pub org_channel: Arc<Channel>,
    pub portals: Mutex<BTreeMap<String, PortalWebhook>>,
    pub portal_channels: Mutex<BTreeMap<String, Arc<Channel>>>,
    pub destinations: Mutex<BTreeMap<String, Destination>>,
    next_seq: Mutex<u64>,
}

impl Emulator {
    pub fn new(settings: Settings, key: SigningKeyPair, ledger: Ledger) -> Emulator {
        Emulator {
            org_channel: Arc::new(Channel::new(settings.seed, None)),
            settings,
            key,
            ledger,
            org: Mutex::default(),
            portals: Mutex::default(),
            portal_channels: Mutex::default(),
            destinations: Mutex::default(),
            next_seq: Mutex::new(1),
        }
    }

    /// The channel of a Dev Portal, created on first use (its events drawn
    /// from a seed of their own).
    pub fn portal_channel(&self, portal: &str) -> Arc<Channel> {
        let mut channels = lock(&self.portal_channels);
        let n = channels.len() as u64 + 1;
        channels
            .entry(portal.to_owned())
            .or_insert_with(|| {
                Arc::new(Channel::new(
                    self.settings.seed.wrapping_add(n),
                    Some(portal.to_owned()),
                ))
            })
            .clone()
    }

    /// Every channel: the org's, then the portals'.
    pub fn channels(&self) -> Vec<Arc<Channel>> {
        let mut all = vec![self.org_channel.clone()];
        all.extend(lock(&self.portal_channels).values().cloned());
        all
    }

    /// Where `channel` delivers now: `None` while its webhook is disabled
    /// or points nowhere.
    pub fn target(&self, channel: &Channel) -> Option<Target> {
        match &channel.portal {
            None => {
                let org = lock(&self.org);
                (org.enabled && !org.target.endpoint.is_empty()).then(|| org.target.clone())
            }
            Some(portal) => {
                let webhook = lock(&self.portals).get(portal).cloned()?;
                let id = webhook.destination_id.filter(|_| webhook.enabled)?;
                lock(&self.destinations).get(&id).map(|d| d.target.clone())
            }
        }
    }

    /// The next event sequence number (shared by all channels).
    pub fn next_seq(&self) -> u64 {
        let mut next = lock(&self.next_seq);
        let seq = *next;
        *next += 1;
        seq
    }
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    crate::query::now_ms()
}
