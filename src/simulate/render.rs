//! Simulated events as Konnect writes them: a CEF line with a syslog prefix
//! (fields in Konnect's order) or a compact JSON object (keys sorted, with
//! Konnect's types), signed with the simulator's key (` sig=` or `,"sig":`
//! last).

use auditsink_parser::signature::SigningKeyPair;
use serde_json::Value;
use time::macros::format_description;
use time::OffsetDateTime;

use super::events::{Kind, SimEvent, AUTH_SUCCESS};
use super::OutputFormat;

impl SimEvent {
    /// The signed line of this event in `format`.
    pub fn render(&self, pair: &SigningKeyPair, format: OutputFormat) -> anyhow::Result<String> {
        let json = match format {
            OutputFormat::Cef => false,
            OutputFormat::Json => true,
            OutputFormat::Mixed => self.mixed_as_json,
        };
        if json {
            Ok(pair.sign_json_line(&self.json_line())?)
        } else {
            Ok(pair.sign_cef_line(&self.cef_line()))
        }
    }

    fn product(&self) -> &'static str {
        if self.portal_id.is_some() {
            "Dev-Portal"
        } else {
            "Konnect"
        }
    }

    /// (event_class_id, name, severity)
    fn header(&self) -> (&'static str, String, u8) {
        match &self.kind {
            Kind::Authentication { auth_type, outcome } => (auth_type, (*outcome).to_owned(), 0),
            Kind::Authorization { resource, .. } => ("konnect", format!("Authz.{resource}"), 1),
            Kind::Access { .. } => ("KongGateway", "Ingress".to_owned(), 1),
        }
    }

    fn time(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.rt) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// The CEF line without its signature, fields in Konnect's order.
    fn cef_line(&self) -> String {
        let time = self.time();
        let prefix = if self.syslog_time {
            time.format(format_description!(
                "[month repr:short] [day padding:space] [hour]:[minute]:[second]"
            ))
        } else {
            time.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
        }
        .unwrap_or_default();
        let (class, name, severity) = self.header();
        let mut line = format!(
            "{prefix} konghq.com CEF:0|KongInc|{}|1.0|{class}|{name}|{severity}|org_id={} principal_id={} src={} trace_id={} user_agent={} rt={}",
            self.product(),
            self.org_id,
            self.principal_id,
            self.src,
            self.trace_id,
            self.user_agent,
            self.rt,
        );
        if let Some(portal) = &self.portal_id {
            line.push_str(&format!(" portal_id={portal}"));
        }
        match &self.kind {
            Kind::Authentication { outcome, .. } => line.push_str(&format!(
                " request=/api/v1/authenticate success={}",
                *outcome == AUTH_SUCCESS
            )),
            Kind::Authorization {
                action, granted, ..
            } => line.push_str(&format!(" action={action} granted={granted}")),
            Kind::Access {
                request,
                act,
                status,
                query,
            } => line.push_str(&format!(
                " request={request} act={act} status={status} query={}",
                query.text(true)
            )),
        }
        if self.empty_actor_id {
            line.push_str(" actor_id=");
        }
        line.push_str(&format!(" kong_initiated={}", self.kong_initiated));
        line
    }

    /// The JSON line without its signature: keys sorted, Konnect's types
    /// (`rt` a string or a number, `cef_version` a number or a string,
    /// `trace_id` a bare integer above 2^53, `success` the string `"true"`,
    /// `granted` and `kong_initiated` booleans).
    fn json_line(&self) -> String {
        let (class, name, severity) = self.header();
        let event_ts = self
            .time()
            .format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .unwrap_or_default();
        let mut object = std::collections::BTreeMap::<&str, Value>::new();
        let cef_version: Value = if self.cef_version_as_string {
            "0".into()
        } else {
            0.into()
        };
        object.insert("cef_version", cef_version);
        object.insert("event_class_id", class.into());
        object.insert("event_product", self.product().into());
        object.insert("event_ts", event_ts.into());
        object.insert("event_vendor", "KongInc".into());
        object.insert("event_version", "1.0".into());
        object.insert("kong_initiated", self.kong_initiated.into());
        object.insert("name", name.into());
        object.insert("org_id", self.org_id.as_str().into());
        object.insert("principal_id", self.principal_id.as_str().into());
        let rt: Value = if self.rt_as_number {
            self.rt.into()
        } else {
            self.rt.to_string().into()
        };
        object.insert("rt", rt);
        object.insert("severity", severity.into());
        object.insert("src", self.src.as_str().into());
        object.insert("trace_id", self.trace_id.into());
        object.insert("user_agent", self.user_agent.into());
        if let Some(portal) = &self.portal_id {
            object.insert("portal_id", portal.as_str().into());
        }
        if self.empty_actor_id {
            object.insert("actor_id", "".into());
        }
        match &self.kind {
            Kind::Authentication { outcome, .. } => {
                object.insert("request", "/api/v1/authenticate".into());
                let success = if *outcome == AUTH_SUCCESS {
                    "true"
                } else {
                    "false"
                };
                object.insert("success", success.into());
            }
            Kind::Authorization {
                action, granted, ..
            } => {
                object.insert("action", (*action).into());
                object.insert("granted", (*granted).into());
            }
            Kind::Access {
                request,
                act,
                status,
                query,
            } => {
                object.insert("act", (*act).into());
                object.insert("query", query.text(false).into());
                object.insert("request", request.as_str().into());
                object.insert("status", (*status).into());
            }
        }
        // Serializing a map of plain values cannot fail.
        serde_json::to_string(&object).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::events::Generator;
    use super::*;

    const START: i64 = 1_764_100_000_000;

    #[test]
    fn same_seed_same_lines_other_seed_others() {
        let pair = SigningKeyPair::from_secret_bytes(&[7; 32]);
        let lines = |seed| {
            let mut g = Generator::new(seed, START, None, false);
            (0..50)
                .map(|_| g.next_event().render(&pair, OutputFormat::Mixed).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(3), lines(3));
        assert_ne!(lines(3), lines(4));
    }

    #[test]
    fn json_keys_are_sorted_with_sig_last() {
        let pair = SigningKeyPair::from_secret_bytes(&[7; 32]);
        let mut g = Generator::new(5, START, None, true);
        for _ in 0..50 {
            let line = g.next_event().render(&pair, OutputFormat::Json).unwrap();
            let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, Value>>(&line)
                .unwrap()
                .keys()
                .cloned()
                .collect();
            let (last, rest) = keys.split_last().unwrap();
            assert_eq!(last, "sig");
            assert!(rest.windows(2).all(|w| w[0] < w[1]), "{line}");
        }
    }
}
