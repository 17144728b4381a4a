//! The normalized event: the JSON contract of `docs/EVENT_SCHEMA.md`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What grammar a line was read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// Common Event Format.
    Cef,
    /// One JSON object.
    Json,
}

/// Outcome of signature verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SignatureStatus {
    /// The signature verified against one of the configured keys.
    Valid,
    /// A signature is present but verifies against no configured key.
    Invalid,
    /// The line carries no signature.
    Missing,
    /// No key is configured, so nothing was checked.
    #[default]
    Unverified,
}

impl SignatureStatus {
    /// The lowercase name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureStatus::Valid => "valid",
            SignatureStatus::Invalid => "invalid",
            SignatureStatus::Missing => "missing",
            SignatureStatus::Unverified => "unverified",
        }
    }
}

/// Where the line says it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Origin {
    /// Prefix time as written (CEF) or `event_ts` (JSON).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub time: Option<String>,
    /// Prefix host (CEF).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host: Option<String>,
}

/// One normalized audit event. Field order is the JSON rendering's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Grammar the line was read with.
    pub format: LineFormat,
    /// Event time, RFC 3339 UTC with milliseconds, or `None`.
    pub timestamp: Option<String>,
    /// CEF version (`CEF:<n>` or JSON `cef_version`).
    pub cef_version: Option<i64>,
    /// CEF header vendor / JSON `event_vendor`.
    pub vendor: Option<String>,
    /// CEF header product / JSON `event_product`.
    pub product: Option<String>,
    /// CEF header version / JSON `event_version`.
    pub product_version: Option<String>,
    /// CEF signature id / JSON `event_class_id`.
    pub event_class_id: Option<String>,
    /// CEF name / JSON `name`.
    pub name: Option<String>,
    /// Integer when numeric, else the text as given; `Null` when absent.
    pub severity: Value,
    /// Every other key, typed per the schema.
    pub fields: Map<String, Value>,
    /// Prefix time and host; omitted when absent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub origin: Option<Origin>,
    /// The signature value, if the line carries one.
    pub sig: Option<String>,
    /// Verification outcome.
    pub signature: SignatureStatus,
    /// Irregularities read leniently; omitted when empty.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
    /// The line exactly as received, minus its terminator.
    pub raw: String,
}
