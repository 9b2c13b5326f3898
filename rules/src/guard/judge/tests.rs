use std::sync::Arc;

use super::*;
use crate::detect::DetectionConfig;
use crate::policy::Policy;
use crate::test_flow::PLANT_POLICY;

/// The plant's policy, the hmi's polls limited to 2 per second.
fn policy() -> Arc<Policy> {
    let read_only = "functions = [\"read\"]\n";
    let text = PLANT_POLICY.replace(read_only, &format!("{read_only}rate = \"2/s\"\n"));
    Arc::new(Policy::parse(&text, "test.toml").unwrap().0)
}

fn judge_for(client: &str) -> EngineJudge {
    let engine = Engine::new(DetectionConfig::default(), Some(policy()));
    EngineJudge::new(
        engine,
        format!("{client}:40000").parse().unwrap(),
        "10.0.0.3:502".parse().unwrap(),
        BlockSet::default(),
        Timestamp::from_secs(1_000),
    )
}

/// The judgement of `pdu` to unit 1 at `secs`, and the rules of the alerts raised meanwhile.
fn judge(j: &mut EngineJudge, secs: u64, pdu: &[u8]) -> (Judgement, Vec<String>) {
    let (request, _) = Request::decode_prefix(pdu).unwrap();
    let mut alerts = Vec::new();
    let asked = Asked {
        transaction_id: 1,
        unit_id: 1,
        request: &request,
        pdu,
        outstanding: 1,
    };
    let judgement = j.judge(Timestamp::from_secs(1_000 + secs), asked, &mut |a| {
        alerts.push(a.rule)
    });
    (judgement, alerts)
}

fn blocked(rule: &str) -> Judgement {
    Judgement::Block { rule: rule.into() }
}

#[test]
fn what_the_policy_allows_passes_and_what_it_forbids_is_blocked_by_its_rule() {
    let mut j = judge_for("10.0.0.9");
    assert_eq!(judge(&mut j, 0, &[3, 0, 0, 0, 10]).0, Judgement::Allow);
    assert_eq!(judge(&mut j, 0, &[6, 0, 5, 0, 100]).0, Judgement::Allow);
    // A setpoint past its bound, a write past the ranges, a write function and another
    // function never allowed.
    let (judgement, alerts) = judge(&mut j, 1, &[6, 0, 5, 0x07, 0xd0]);
    assert_eq!(judgement, blocked("policy.setpoint_out_of_bounds"));
    assert_eq!(
        alerts,
        ["policy.setpoint_out_of_bounds"],
        "and it is alerted"
    );
    assert_eq!(
        judge(&mut j, 2, &[6, 0x01, 0xf4, 0, 1]).0,
        blocked("policy.write_outside_ranges")
    );
    assert_eq!(
        judge(&mut j, 3, &[16, 0, 0, 0, 1, 2, 0, 1]).0,
        blocked("policy.unauthorized_write")
    );
    // Read Device Identification: a function the policy never allows.
    assert_eq!(
        judge(&mut j, 4, &[0x2b, 0x0e, 0x01, 0x00]).0,
        blocked("policy.unauthorized_function")
    );
}

#[test]
fn an_unknown_master_and_dangerous_diagnostics_are_blocked() {
    let mut stranger = judge_for("10.0.0.66");
    assert_eq!(
        judge(&mut stranger, 0, &[3, 0, 0, 0, 1]).0,
        blocked("policy.unknown_master")
    );
    // Force Listen Only from a known master: the built-in detector's finding blocks it (the
    // policy's own unauthorized-function finding would too).
    let mut scada = judge_for("10.0.0.9");
    let (judgement, _) = judge(&mut scada, 0, &[8, 0, 4, 0, 0]);
    assert!(
        matches!(&judgement, Judgement::Block { rule } if rule == "diag.force_listen_only" || rule == "policy.unauthorized_function"),
        "{judgement:?}"
    );
}

#[test]
fn a_rate_exceeded_is_alerted_but_never_blocked() {
    let mut hmi = judge_for("10.0.0.20");
    let mut alerts = Vec::new();
    for _ in 0..10 {
        let (judgement, raised) = judge(&mut hmi, 0, &[3, 0, 0, 0, 1]);
        assert_eq!(
            judgement,
            Judgement::Allow,
            "polls are never blocked for their rate"
        );
        alerts.extend(raised);
    }
    // The rate's alert comes when its fold window closes.
    let (_, raised) = judge(&mut hmi, 120, &[3, 0, 0, 0, 1]);
    alerts.extend(raised);
    assert!(
        alerts.iter().any(|r| r == "policy.rate_exceeded"),
        "{alerts:?}"
    );
}

#[test]
fn the_block_set_decides_which_findings_block() {
    let mut j = EngineJudge::new(
        Engine::new(DetectionConfig::default(), Some(policy())),
        "10.0.0.9:40000".parse().unwrap(),
        "10.0.0.3:502".parse().unwrap(),
        BlockSet::of(["policy.write_outside_ranges"]),
        Timestamp::from_secs(1_000),
    );
    // Not in this set: alerted, not blocked.
    assert_eq!(judge(&mut j, 0, &[6, 0, 5, 0x07, 0xd0]).0, Judgement::Allow);
    assert_eq!(
        judge(&mut j, 1, &[6, 0x01, 0xf4, 0, 1]).0,
        blocked("policy.write_outside_ranges")
    );
}
