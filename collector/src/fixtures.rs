//! Alerts and batches for the collector's unit tests (compiled only for them).
// The addresses parsed here are literals written in the tests: a typo is a failed test.
#![allow(clippy::unwrap_used)]

use otwatch_rules::alert::{Alert, SCHEMA_VERSION as ALERT_SCHEMA, Severity};
use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::IngestBatch;

/// Alert number `n`: its id and time derive from `n`.
pub(crate) fn alert(
    n: u64,
    rule: &str,
    severity: Severity,
    src: &str,
    dst: &str,
    agent: &str,
) -> Alert {
    Alert {
        schema: ALERT_SCHEMA,
        id: format!("{n:032x}"),
        ts: Timestamp::from_secs(1_000 + n),
        agent: agent.into(),
        severity,
        rule: rule.into(),
        title: rule.into(),
        technique: vec!["T0855".into()],
        src_ip: src.parse().unwrap(),
        src_port: 40000,
        dst_ip: dst.parse().unwrap(),
        dst_port: 502,
        unit_id: Some(1),
        function_code: Some(6),
        function: Some("write_single_register".into()),
        address: Some(1),
        quantity: Some(1),
        values: Some(vec![5]),
        exception: None,
        count: 1,
        first_ts: Timestamp::from_secs(1_000 + n),
        evidence: None,
        flow: 1,
        message: None,
        seen: None,
    }
}

/// `a` with the id its fields derive, as an agent makes it (what ingest checks).
pub(crate) fn verified(mut a: Alert) -> Alert {
    a.id = a.derived_id(0);
    a
}

/// A batch from `agent`.
pub(crate) fn batch(agent: &str, alerts: Vec<Alert>) -> IngestBatch {
    IngestBatch {
        agent: agent.into(),
        alerts,
        assets: Vec::new(),
        conversations: Vec::new(),
        evidence: Vec::new(),
        learned: Vec::new(),
    }
}
