use std::collections::BTreeMap;

use otwatch_kv::memory::MemoryKv;
use otwatch_rules::alert::Severity;
use otwatch_rules::modbus::FunctionCode;

use super::*;

fn snapshot(packets: u64, writes: u64) -> Snapshot {
    let mut requests = otwatch_packet::modbus_counters::ByFunction::default();
    for _ in 0..writes {
        requests.add(FunctionCode::new(6).unwrap());
    }
    let mut alerts = BTreeMap::new();
    alerts.insert(("modbus.write_denied".to_string(), Severity::High), writes);
    let mut decode_errors = BTreeMap::new();
    decode_errors.insert("bad_length", 2);
    Snapshot {
        packets,
        bytes: packets * 60,
        flows_active: 3,
        requests,
        alerts,
        decode_errors,
        ..Snapshot::default()
    }
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

#[test]
fn counters_follow_the_status_snapshot_across_scrapes() {
    let metrics = AgentMetrics::new().unwrap();
    let status = Status::new();
    status.publish(snapshot(100, 2));
    let first = metrics.render(&status, None, None);
    assert_eq!(
        line(&first, "otwatch_agent_packets_total "),
        "otwatch_agent_packets_total 100"
    );
    status.publish(snapshot(250, 5));
    let text = metrics.render(&status, None, None);
    assert_eq!(
        line(&text, "otwatch_agent_packets_total "),
        "otwatch_agent_packets_total 250"
    );
    assert_eq!(
        line(
            &text,
            "otwatch_agent_requests_total{function=\"write_single_register\"}"
        ),
        "otwatch_agent_requests_total{function=\"write_single_register\"} 5"
    );
    assert_eq!(
        line(&text, "otwatch_agent_alerts_total{"),
        "otwatch_agent_alerts_total{rule=\"modbus.write_denied\",severity=\"high\"} 5"
    );
    assert_eq!(
        line(&text, "otwatch_agent_decode_errors_total{"),
        "otwatch_agent_decode_errors_total{kind=\"bad_length\"} 2"
    );
    assert_eq!(
        line(&text, "otwatch_agent_flows_active "),
        "otwatch_agent_flows_active 3"
    );
}

#[test]
fn outbox_depth_drops_and_delivery_are_exported() {
    let metrics = AgentMetrics::new().unwrap();
    let outbox = Outbox::open(Arc::new(MemoryKv::new()), 1 << 20).unwrap();
    let seen = otwatch_rules::wire::AssetObservation::new(
        "10.0.0.9".parse().unwrap(),
        otwatch_rules::time::Timestamp::from_secs(1),
    );
    outbox
        .push(&[crate::delivery::outbox::Record::Asset(seen)])
        .unwrap();
    let delivered = Delivered {
        records: 9,
        failures: 4,
        connected: true,
        ..Delivered::default()
    };
    let text = metrics.render(&Status::new(), Some(&outbox), Some(delivered));
    assert_eq!(
        line(&text, "otwatch_agent_outbox_depth "),
        "otwatch_agent_outbox_depth 1"
    );
    assert_eq!(
        line(&text, "otwatch_agent_records_delivered_total "),
        "otwatch_agent_records_delivered_total 9"
    );
    assert_eq!(
        line(&text, "otwatch_agent_send_failures_total "),
        "otwatch_agent_send_failures_total 4"
    );
    assert_eq!(
        line(&text, "otwatch_agent_collector_connected "),
        "otwatch_agent_collector_connected 1"
    );
    assert!(
        text.contains("otwatch_agent_drops_total{where=\"outbox\"} 0"),
        "{text}"
    );
    assert_eq!(
        line(&text, "otwatch_agent_outbox_lane_depth{lane=\"alerts\"}"),
        "otwatch_agent_outbox_lane_depth{lane=\"alerts\"} 0"
    );
    assert_eq!(
        line(
            &text,
            "otwatch_agent_outbox_lane_depth{lane=\"observations\"}"
        ),
        "otwatch_agent_outbox_lane_depth{lane=\"observations\"} 1"
    );
}

#[test]
fn the_server_answers_metrics_and_health_over_http() {
    let metrics = AgentMetrics::new().unwrap();
    let status = Arc::new(Status::new());
    status.publish(snapshot(42, 0));
    let render: Render = Arc::new(move || metrics.render(&status, None, None));
    let server = serve("127.0.0.1:0".parse().unwrap(), render).unwrap();
    let body = ureq::get(format!("http://{}/metrics", server.addr))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(body.contains("otwatch_agent_packets_total 42"), "{body}");
    let health = ureq::get(format!("http://{}/healthz", server.addr))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert_eq!(health, "ok");
}

#[test]
fn internal_events_are_exported_and_policy_reloads_counted_from_them() {
    use crate::telemetry::events::{InternalEvent, PolicyRejected, PolicyReloaded};
    let metrics = AgentMetrics::new().unwrap();
    let status = Status::new();
    PolicyReloaded {
        hash: "abc",
        warnings: &[],
    }
    .emit(&status);
    PolicyRejected {
        error: &"policy.toml:3:1: rules[0].function: expected a function code",
    }
    .emit(&status);
    PolicyRejected { error: &"again" }.emit(&status);
    let text = metrics.render(&status, None, None);
    assert_eq!(
        line(
            &text,
            "otwatch_agent_policy_reloads_total{result=\"applied\"}"
        ),
        "otwatch_agent_policy_reloads_total{result=\"applied\"} 1"
    );
    assert_eq!(
        line(
            &text,
            "otwatch_agent_policy_reloads_total{result=\"rejected\"}"
        ),
        "otwatch_agent_policy_reloads_total{result=\"rejected\"} 2"
    );
    assert_eq!(
        line(
            &text,
            "otwatch_agent_internal_events_total{event=\"policy_rejected\"}"
        ),
        "otwatch_agent_internal_events_total{event=\"policy_rejected\"} 2"
    );
    // Rendered again, nothing new: the counters do not move.
    let again = metrics.render(&status, None, None);
    assert_eq!(
        line(
            &again,
            "otwatch_agent_policy_reloads_total{result=\"rejected\"}"
        ),
        "otwatch_agent_policy_reloads_total{result=\"rejected\"} 2"
    );
}
