use super::*;
use crate::alert::Seen;
use crate::time::Timestamp;

const POLICY: &str = r#"# The kiln.
version = 1

[[asset]]
name = "ews"
address = "10.0.0.5"
role = "master"

[[asset]]
name = "kiln"
addresses = ["10.0.0.0/28"]
role = "slave"

# Polling.
[[allow]]
name = "poll"
from = "ews"
to = "kiln"
functions = "read"
holding_registers = "0-99"

[detectors."recon.read_device_id"]
severity = "info"
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An alert of `rule` on a write of 7 to holding register 100 of unit 1 at 10.0.0.9, frame
/// included, naming rule `poll` as closest.
fn write_alert(rule: &str) -> Alert {
    let mut a = crate::alert::sample();
    a.rule = rule.into();
    a.message =
        Some("function write_single_register not allowed (closest allow rule: poll)".into());
    a.id = a.derived_id(0);
    a
}

/// Whether `policy` allows the request in `pdu` from `from` to `to`, unit `unit`.
fn allows(policy: &Policy, from: &str, to: &str, unit: u8, pdu: &[u8]) -> bool {
    let request = Request::decode(pdu).unwrap();
    let candidates = policy.candidates(ip(from), ip(to));
    policy
        .allowing_rule(
            &candidates,
            Timestamp::from_secs(1_700_000_000),
            unit,
            &request,
            |_, _| true,
        )
        .is_ok()
}

/// The lines `new` has in one block that `old` does not; panics unless `new` is `old` with
/// one block inserted.
fn inserted(old: &str, new: &str) -> String {
    let (old, new): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let at = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let extra = new.len() - old.len();
    assert_eq!(new[at + extra..], old[at..], "more than one block changed");
    new[at..at + extra].join("\n")
}

fn changed(alert: &Alert) -> (AllowChange, Policy) {
    let change = allow_this(POLICY, alert).unwrap();
    let (policy, _) = Policy::parse(&change.text, "changed").unwrap();
    (change, policy)
}

#[test]
fn an_unauthorized_write_gets_a_rule_for_exactly_that_write() {
    let alert = write_alert("policy.unauthorized_write");
    let (change, policy) = changed(&alert);
    // The write itself, and nothing next to it.
    assert!(allows(
        &policy,
        "10.0.0.5",
        "10.0.0.9",
        1,
        &[6, 0, 100, 0, 7]
    ));
    assert!(
        !allows(&policy, "10.0.0.5", "10.0.0.9", 1, &[6, 0, 100, 0, 8]),
        "another value"
    );
    assert!(
        !allows(&policy, "10.0.0.5", "10.0.0.9", 1, &[6, 0, 101, 0, 7]),
        "another register"
    );
    assert!(
        !allows(&policy, "10.0.0.5", "10.0.0.9", 2, &[6, 0, 100, 0, 7]),
        "another unit"
    );
    assert!(
        !allows(&policy, "10.0.0.5", "10.0.0.10", 1, &[6, 0, 100, 0, 7]),
        "another target"
    );
    assert!(
        !allows(&policy, "10.0.0.5", "10.0.0.9", 1, &[5, 0, 100, 0xff, 0]),
        "another function"
    );
    // The old rules and comments stay as they were: the new rule is one block inserted after
    // the last [[allow]] rule, explained.
    let added = inserted(POLICY, &change.text);
    assert!(
        added.contains(&format!("# Allowed from alert {}", alert.id)),
        "{added}"
    );
    assert!(
        added.contains("closest rule before this one: \"poll\""),
        "{added}"
    );
    assert!(change.text.find(&added) < change.text.find("[detectors."));
    // Offered again on the changed policy: it is allowed already.
    assert_eq!(
        allow_this(&change.text, &alert),
        Err(NotAllowable::AlreadyAllowed(format!(
            "from-alert-{}",
            &alert.id[..8]
        )))
    );
    assert!(added.contains("[[allow]]"), "{added}");
    assert!(
        added.contains("write_values = { min = 7, max = 7 }"),
        "{added}"
    );
    assert!(change.notes.is_empty(), "{:?}", change.notes);
}

#[test]
fn an_unknown_master_gets_a_rule_naming_its_address() {
    let mut alert = write_alert("policy.unknown_master");
    alert.src_ip = ip("10.0.0.66");
    alert.message = Some("no allow rule names this master".into());
    let (_, policy) = changed(&alert);
    assert!(allows(
        &policy,
        "10.0.0.66",
        "10.0.0.9",
        1,
        &[6, 0, 100, 0, 7]
    ));
    assert!(!allows(
        &policy,
        "10.0.0.66",
        "10.0.0.9",
        1,
        &[3, 0, 0, 0, 1]
    ));
}

#[test]
fn a_diagnostics_request_is_allowed_for_its_sub_function_only() {
    let mut alert = write_alert("policy.unauthorized_function");
    alert.function_code = Some(8);
    alert.function = Some("diagnostics".into());
    (alert.address, alert.quantity, alert.values) = (None, None, None);
    // Restart communications (8/1).
    alert.evidence = Some("00020000000601080001ff00".into());
    let (_, policy) = changed(&alert);
    assert!(allows(
        &policy,
        "10.0.0.5",
        "10.0.0.9",
        1,
        &[8, 0, 1, 0xff, 0]
    ));
    assert!(
        !allows(&policy, "10.0.0.5", "10.0.0.9", 1, &[8, 0, 4, 0, 0]),
        "force listen only"
    );
}

#[test]
fn a_folded_alert_allows_every_unit_function_and_range_it_saw_and_says_so() {
    let mut alert = write_alert("policy.unauthorized_write");
    alert.count = 3;
    alert.seen = Some(Seen {
        units: vec![1, 2],
        functions: vec![6, 16],
        ranges: vec![[100, 100], [200, 203]],
    });
    let (change, policy) = changed(&alert);
    assert!(allows(
        &policy,
        "10.0.0.5",
        "10.0.0.9",
        2,
        &[6, 0, 200, 0, 99]
    ));
    assert!(allows(
        &policy,
        "10.0.0.5",
        "10.0.0.9",
        1,
        &[16, 0, 200, 0, 4, 8, 0, 1, 0, 2, 0, 3, 0, 4]
    ));
    assert!(!allows(
        &policy,
        "10.0.0.5",
        "10.0.0.9",
        1,
        &[6, 0, 150, 0, 1]
    ));
    assert!(
        change
            .notes
            .iter()
            .any(|n| n.contains("values of the alert's 3 occurrences")),
        "{:?}",
        change.notes
    );
}

#[test]
fn a_detector_alert_suppresses_its_source_in_the_detectors_table() {
    let mut alert = write_alert("recon.read_device_id");
    alert.function_code = Some(43);
    let change = allow_this(POLICY, &alert).unwrap();
    assert!(
        change.text.contains(
            "[detectors.\"recon.read_device_id\"]\nseverity = \"info\"\nsuppress = [\"10.0.0.5\"]"
        ),
        "{}",
        change.text
    );
    let again = allow_this(&change.text, &alert).unwrap();
    assert_eq!(again.text, change.text, "a source is listed once");
    let mut other = write_alert("diag.restart_communications");
    other.src_ip = ip("10.0.0.7");
    let text = allow_this(POLICY, &other).unwrap().text;
    assert!(
        text.contains("[detectors.\"diag.restart_communications\"]\nsuppress = [\"10.0.0.7\"]"),
        "{text}"
    );
    Policy::parse(&text, "x").unwrap();
}

#[test]
fn rates_limits_alert_rules_and_agent_alerts_are_not_offered_a_change() {
    for rule in [
        "policy.rate_exceeded",
        "policy.process_value_out_of_bounds",
        "policy.alert.tank_setpoint",
        "agent.outbox_overflow",
    ] {
        let e = allow_this(POLICY, &write_alert(rule)).unwrap_err();
        assert!(matches!(e, NotAllowable::Kind(_)), "{rule}: {e}");
    }
}

#[test]
fn a_policy_without_allow_rules_gets_its_first() {
    let text = "version = 1\n";
    let change = allow_this(text, &write_alert("policy.unknown_master")).unwrap();
    let (policy, _) = Policy::parse(&change.text, "x").unwrap();
    assert_eq!(policy.allow.len(), 1);
}
