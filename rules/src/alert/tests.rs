use super::*;

#[test]
fn rule_ids_are_unique_and_found_by_id() {
    let mut ids: Vec<&str> = rule::ALL.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), rule::ALL.len());
    assert_eq!(
        rule_by_id("diag.force_listen_only"),
        Some(&rule::FORCE_LISTEN_ONLY)
    );
    assert_eq!(rule_by_id("nope"), None);
}

#[test]
fn every_traffic_rule_names_an_attack_technique() {
    for r in rule::ALL.iter().filter(|r| !r.id.starts_with("agent.")) {
        assert!(!r.technique.is_empty(), "{}", r.id);
        assert!(
            r.technique
                .iter()
                .all(|t| t.len() == 5 && t.starts_with("T0")),
            "{}",
            r.id
        );
    }
}

#[test]
fn severities_order_from_info_to_critical_and_parse_back() {
    assert!(Severity::Info < Severity::Low && Severity::High < Severity::Critical);
    for s in [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ] {
        assert_eq!(Severity::from_name(s.name()), Some(s));
    }
}

#[test]
fn stable_id_depends_on_every_identifying_field() {
    let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let t = Timestamp::from_secs(5);
    let base = Alert::stable_id("agent", "r", a, b, Some(1), t, 0);
    assert_eq!(base, Alert::stable_id("agent", "r", a, b, Some(1), t, 0));
    for other in [
        Alert::stable_id("agent2", "r", a, b, Some(1), t, 0),
        Alert::stable_id("agent", "r2", a, b, Some(1), t, 0),
        Alert::stable_id("agent", "r", b, a, Some(1), t, 0),
        Alert::stable_id("agent", "r", a, b, None, t, 0),
        Alert::stable_id("agent", "r", a, b, Some(1), Timestamp::from_secs(6), 0),
        Alert::stable_id("agent", "r", a, b, Some(1), t, 1),
    ] {
        assert_ne!(base, other);
    }
    // Below the microsecond an alert carries, first_ts does not change the id.
    let later = Timestamp::from_nanos(t.as_nanos() + 999);
    assert_eq!(
        base,
        Alert::stable_id("agent", "r", a, b, Some(1), later, 0)
    );
}

#[test]
fn exception_bursts_raise_at_the_third_counting_detectors_at_once_and_the_rest_at_the_first() {
    use super::Fold;
    use super::rule::*;
    for r in [
        BUSY_STORM,
        ACKNOWLEDGE_STORM,
        POINTS_SCAN,
        FUNCTION_CODE_SCAN,
    ] {
        assert_eq!(r.fold, Fold::After(3), "{}", r.id);
    }
    for r in [
        UNIT_ID_SCAN,
        ADDRESS_SWEEP,
        BRUTE_FORCE_IO,
        REQUEST_FLOOD,
        SYN_FLOOD,
        CONNECTION_FLOOD,
        DISTRIBUTED_FLOOD,
        ARP_SPOOF,
        MAC_CHANGE,
    ] {
        assert_eq!(r.fold, Fold::Counted, "{}", r.id);
    }
    let first = ALL.iter().filter(|r| r.fold == Fold::After(1)).count();
    assert_eq!(first, ALL.len() - 13);
}
