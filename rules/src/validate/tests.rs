use std::net::IpAddr;

use super::*;
use crate::alert::rule;
use crate::time::Timestamp;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// A valid alert of agent `a1`, its id derived as an agent derives it.
fn valid() -> Alert {
    crate::alert::sample()
}

fn reid(a: &mut Alert, seq: u64) {
    a.id = a.derived_id(seq);
}

fn field_of(a: &Alert) -> Option<String> {
    alert(a).err().map(|e| e.field)
}

#[test]
fn an_alert_as_an_agent_raises_it_passes_with_either_sequence() {
    let mut a = valid();
    assert_eq!(alert(&a), Ok(()));
    reid(&mut a, 1);
    assert_eq!(alert(&a), Ok(()));
    reid(&mut a, 2);
    assert_eq!(field_of(&a).as_deref(), Some("id"));
}

#[test]
fn an_id_that_its_fields_do_not_derive_is_refused_naming_the_id() {
    // Another agent's id, copied: the id binds the agent's name.
    let theirs = valid();
    let mut mine = valid();
    mine.agent = "a2".into();
    mine.id = theirs.id.clone();
    assert_eq!(field_of(&mine).as_deref(), Some("id"));
    reid(&mut mine, 0);
    assert_eq!(alert(&mine), Ok(()));
    // Any identifying field changed after the id was derived.
    for change in [
        (|a: &mut Alert| a.rule = "policy.unauthorized_read".into()) as fn(&mut Alert),
        |a| a.src_ip = ip("10.0.0.6"),
        |a| a.dst_ip = ip("10.0.0.6"),
        |a| a.unit_id = None,
        |a| a.first_ts = Timestamp::from_secs(1),
        |a| a.id = a.id.to_uppercase(),
    ] {
        let mut a = valid();
        change(&mut a);
        assert_eq!(field_of(&a).as_deref(), Some("id"), "{a:?}");
    }
}

#[test]
fn rule_ids_are_checked_by_syntax_so_a_later_releases_rules_pass() {
    for ok in [
        "recon.read_device_id",
        "evasion.overlapping_fragments",
        "policy.alert.setpoint change",
        "x",
        &"r".repeat(MAX_RULE_ID),
    ] {
        assert!(is_rule_id(ok), "{ok:?}");
    }
    for bad in [
        "",
        "policy.unauthorized_write\u{0}\u{7f}",
        "a\nb",
        " leading",
        "trailing ",
        "caf\u{e9}",
        &"r".repeat(MAX_RULE_ID + 1),
    ] {
        assert!(!is_rule_id(bad), "{bad:?}");
        let mut a = valid();
        a.rule = bad.to_string();
        reid(&mut a, 0);
        assert_eq!(field_of(&a).as_deref(), Some("rule"), "{bad:?}");
    }
}

#[test]
fn techniques_are_t_and_four_digits_with_an_optional_sub_technique() {
    for ok in ["T0855", "T1059.001"] {
        assert!(is_technique(ok), "{ok:?}");
    }
    for bad in [
        "",
        "T085",
        "T08555",
        "t0855",
        "T0855.1",
        "T0855.0001",
        "T0855\u{0}",
        "0855",
    ] {
        assert!(!is_technique(bad), "{bad:?}");
    }
    let mut a = valid();
    a.technique = vec!["T0855".into(), "T0855\u{0}\u{7f}".into()];
    assert_eq!(field_of(&a).as_deref(), Some("technique[1]"));
    a.technique = vec!["T0855".into(); MAX_TECHNIQUES + 1];
    assert_eq!(field_of(&a).as_deref(), Some("technique"));
}

/// A change to make to a valid alert.
type Change = fn(&mut Alert);

#[test]
fn every_string_and_list_of_an_alert_is_bounded() {
    let cases: [(&str, Change); 8] = [
        ("title", |a| a.title = "t".repeat(MAX_TITLE + 1)),
        ("message", |a| a.message = Some("m".repeat(MAX_MESSAGE + 1))),
        ("function", |a| a.function = Some("f".repeat(MAX_NAME + 1))),
        ("exception", |a| {
            a.exception = Some("e".repeat(MAX_NAME + 1))
        }),
        ("values", |a| a.values = Some(vec![1; MAX_VALUES + 1])),
        ("evidence", |a| {
            a.evidence = Some("0".repeat(MAX_EVIDENCE + 2))
        }),
        ("evidence", |a| a.evidence = Some("zz".into())),
        ("count", |a| a.count = 0),
    ];
    for (field, change) in cases {
        let mut a = valid();
        change(&mut a);
        assert_eq!(field_of(&a).as_deref(), Some(field));
    }
    let mut a = valid();
    a.schema = 99;
    assert_eq!(field_of(&a).as_deref(), Some("schema"));
}

#[test]
fn new_agent_names_are_letters_digits_dots_dashes_and_underscores() {
    for ok in ["a1", "plant-1.line_2", &"a".repeat(MAX_AGENT_NAME)] {
        assert!(is_agent_name(ok), "{ok:?}");
    }
    for bad in [
        "",
        "a b",
        "a\"b",
        "a\nb",
        "a/b",
        "\u{e9}",
        &"a".repeat(MAX_AGENT_NAME + 1),
    ] {
        assert!(!is_agent_name(bad), "{bad:?}");
    }
}

#[test]
fn a_batch_names_the_record_and_field_at_fault() {
    let mut other = valid();
    other.agent = "a2".into();
    reid(&mut other, 0);
    let mut bad_rule = valid();
    bad_rule.rule = "r\u{0}".into();
    reid(&mut bad_rule, 0);
    let mut b = IngestBatch {
        agent: "a1".into(),
        alerts: vec![valid(), bad_rule],
        assets: Vec::new(),
        conversations: Vec::new(),
        evidence: Vec::new(),
        learned: Vec::new(),
    };
    let e = batch(&b).unwrap_err();
    assert_eq!(e.field, "alerts[1].rule");
    assert!(e.to_string().contains("expected a rule id"), "{e}");
    b.alerts = vec![valid(), valid(), other];
    assert_eq!(batch(&b).unwrap_err().field, "alerts[2].agent");
    b.alerts = vec![valid()];
    let mut asset = AssetObservation::new(ip("10.0.0.9"), Timestamp::from_secs(1));
    asset.macs = vec!["00:1d:9c:c7:b0:70".into()];
    b.assets = vec![asset.clone(), asset.clone()];
    assert_eq!(batch(&b), Ok(()));
    b.assets[1].macs = (0..=MAX_MACS)
        .map(|i| format!("00:00:00:00:00:{i:02x}"))
        .collect();
    assert_eq!(batch(&b).unwrap_err().field, "assets[1].macs");
    b.assets[1].macs = vec!["00:1D:9C:C7:B0:70".into()];
    assert_eq!(batch(&b).unwrap_err().field, "assets[1].macs[0]");
    b.assets[1] = asset;
    b.assets[1].peers = vec![ip("10.0.0.1"); MAX_PEERS + 1];
    assert_eq!(batch(&b).unwrap_err().field, "assets[1].peers");
    b.assets[1].peers.clear();
    b.assets[1].zone = Some("z".repeat(MAX_LABEL + 1));
    assert_eq!(batch(&b).unwrap_err().field, "assets[1].zone");
}

#[test]
fn a_heartbeat_is_bounded_and_its_rate_is_a_number() {
    let mut h = Heartbeat {
        agent: "a1".into(),
        version: "0.1.0".into(),
        ..Heartbeat::default()
    };
    assert_eq!(heartbeat(&h), Ok(()));
    h.last_error = Some("e".repeat(MAX_MESSAGE + 1));
    assert_eq!(heartbeat(&h).unwrap_err().field, "last_error");
    h.last_error = None;
    h.packets_per_s = f64::NAN;
    assert_eq!(heartbeat(&h).unwrap_err().field, "packets_per_s");
    h.packets_per_s = 0.0;
    for bad in [0, MAX_POLICY_LANGUAGE + 1] {
        h.policy_language = Some(bad);
        assert_eq!(heartbeat(&h).unwrap_err().field, "policy_language");
    }
    h.policy_language = Some(crate::policy::POLICY_VERSION);
    assert_eq!(heartbeat(&h), Ok(()));
    for bad in [
        String::new(),
        "https://a:8443\n<script>".to_string(),
        format!("https://{}", "a".repeat(MAX_COLLECTOR_URL)),
    ] {
        h.collector = Some(bad);
        assert_eq!(heartbeat(&h).unwrap_err().field, "collector");
    }
    h.collector = Some("https://replica-2.plant:8443".into());
    assert_eq!(heartbeat(&h), Ok(()));
}

#[test]
fn a_heartbeat_from_before_central_policies_still_reads() {
    let old = r#"{"agent":"a1","version":"0.1.0","uptime_s":3,"policy_hash":"ab"}"#;
    let h: Heartbeat = serde_json::from_str(old).unwrap();
    assert_eq!((h.policy_source, h.policy_language), (None, None));
    let new = r#"{"agent":"a1","version":"0.2.0","uptime_s":3,"policy_source":"collector","policy_language":1}"#;
    let h: Heartbeat = serde_json::from_str(new).unwrap();
    assert_eq!(h.policy_source, Some(crate::wire::PolicySource::Collector));
}

#[test]
fn truncation_keeps_a_character_whole() {
    let mut text = "ab\u{e9}".to_string();
    truncate(&mut text, 3);
    assert_eq!(text, "ab");
}

#[test]
fn a_schema_1_alert_keeps_an_id_it_derives_and_is_bound_to_its_agent_where_not() {
    // Captured in microseconds: schema 1 derived the same id, which is kept.
    let mut a = valid();
    a.schema = 1;
    assert_eq!(alert(&a), Ok(()));
    assert!(!bind_id(&mut a));
    // Captured in nanoseconds: schema 1's id hashed digits the alert does not carry.
    let mut b = valid();
    b.schema = 1;
    b.id = "0123456789abcdef0123456789abcdef".into();
    assert_eq!(alert(&b), Ok(()));
    let mut retried = b.clone();
    assert!(bind_id(&mut b));
    assert!(bind_id(&mut retried));
    assert_eq!(b.id, retried.id, "a retry is stored under the same id");
    assert_eq!(alert(&b), Ok(()));
    let mut other = valid();
    other.schema = 1;
    other.agent = "a2".into();
    other.id = "0123456789abcdef0123456789abcdef".into();
    bind_id(&mut other);
    assert_ne!(
        b.id, other.id,
        "the same id from another agent names another alert"
    );
    // A schema 2 alert is never rebound: its id must derive.
    let mut c = valid();
    c.id = "0123456789abcdef0123456789abcdef".into();
    assert_eq!(field_of(&c).as_deref(), Some("id"));
}

#[test]
fn an_alert_of_an_unknown_schema_is_told_apart_from_an_invalid_one() {
    let mut a = valid();
    a.schema = SCHEMA_VERSION + 1;
    let e = alert(&a).unwrap_err();
    assert_eq!((e.field.as_str(), e.unknown_version), ("schema", true));
    a.schema = SCHEMA_VERSION;
    a.rule = String::new();
    assert!(!alert(&a).unwrap_err().unknown_version);
}

#[test]
fn a_name_enrolled_by_an_earlier_release_still_reports_unless_it_holds_controls() {
    for ok in ["Halle 1", "Pumpenhaus \u{e4}"] {
        assert_eq!(agent_name("agent", ok), Ok(()), "{ok:?}");
    }
    for bad in ["", "a\nb", "a\u{0}", &"a".repeat(MAX_AGENT_NAME + 1)] {
        assert!(agent_name("agent", bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_schema_1_rule_may_be_named_in_any_language_but_not_with_controls() {
    let mut a = valid();
    a.schema = 1;
    a.rule = "policy.alert.Sollwert \u{e4}ndern".into();
    reid(&mut a, 0);
    assert_eq!(alert(&a), Ok(()));
    a.schema = SCHEMA_VERSION;
    assert_eq!(field_of(&a).as_deref(), Some("rule"));
    a.schema = 1;
    a.rule = "r\u{0}".into();
    assert_eq!(field_of(&a).as_deref(), Some("rule"));
}

#[test]
fn every_schema_an_agent_in_the_field_sends_is_taken() {
    for schema in [2, 3] {
        let mut a = valid();
        a.schema = schema;
        reid(&mut a, 0);
        assert_eq!(alert(&a), Ok(()), "schema {schema}");
    }
}

#[test]
fn a_schema_3_alert_with_seen_derives_its_id_without_the_unit() {
    let mut a = valid();
    a.seen = Some(crate::alert::Seen {
        units: vec![1, 2, 3],
        functions: vec![6],
        ranges: vec![[100, 102]],
    });
    reid(&mut a, 1);
    assert_eq!(alert(&a), Ok(()));
    let other_unit = Alert {
        unit_id: Some(9),
        ..a.clone()
    };
    assert_eq!(other_unit.derived_id(1), a.id, "the unit is not in the id");
    // Without `seen` the unit counts, as in schema 2.
    let mut plain = valid();
    plain.seen = None;
    assert_ne!(
        plain.derived_id(0),
        Alert {
            unit_id: Some(9),
            ..plain.clone()
        }
        .derived_id(0)
    );
}

#[test]
fn seen_is_refused_before_schema_3_and_when_its_lists_are_not_what_an_agent_makes() {
    let mut a = valid();
    a.schema = 2;
    a.seen = Some(crate::alert::Seen::default());
    reid(&mut a, 0);
    assert_eq!(field_of(&a).as_deref(), Some("seen"));
    let mut b = valid();
    b.seen = Some(crate::alert::Seen {
        units: vec![5, 5],
        ..Default::default()
    });
    reid(&mut b, 0);
    assert_eq!(field_of(&b).as_deref(), Some("seen.units"));
    let mut c = valid();
    c.seen = Some(crate::alert::Seen {
        ranges: (0..40).map(|i| [i * 10, i * 10 + 1]).collect(),
        ..Default::default()
    });
    reid(&mut c, 0);
    assert_eq!(field_of(&c).as_deref(), Some("seen.ranges"));
}

#[test]
fn seen_on_a_per_unit_rule_or_without_the_alerts_own_occurrence_is_refused() {
    let fitting = crate::alert::Seen {
        units: vec![1, 2],
        functions: vec![6],
        ranges: vec![[100, 100]],
    };
    // A per-unit rule: `seen` would take the unit out of its id.
    let mut a = valid();
    a.rule = rule::UMAS_STOP.id.into();
    a.seen = Some(fitting.clone());
    reid(&mut a, 0);
    assert_eq!(field_of(&a).as_deref(), Some("seen"));
    // A policy alert rule folds per unit too.
    a.rule = "policy.alert.setpoint".into();
    reid(&mut a, 0);
    assert_eq!(field_of(&a).as_deref(), Some("seen"));
    // The alert's own unit, function and address are among what it saw.
    for (field, seen) in [
        (
            "seen.units",
            crate::alert::Seen {
                units: vec![2],
                ..fitting.clone()
            },
        ),
        (
            "seen.functions",
            crate::alert::Seen {
                functions: vec![3],
                ..fitting.clone()
            },
        ),
        (
            "seen.ranges",
            crate::alert::Seen {
                ranges: vec![[0, 99]],
                ..fitting.clone()
            },
        ),
    ] {
        let mut b = valid();
        b.seen = Some(seen);
        reid(&mut b, 0);
        assert_eq!(field_of(&b).as_deref(), Some(field));
    }
    let mut ok = valid();
    ok.seen = Some(fitting);
    reid(&mut ok, 0);
    assert_eq!(alert(&ok), Ok(()));
}

#[test]
fn a_learned_policy_is_bounded_checked_and_only_what_learning_writes() {
    let good =
        "version = 1\n[[allow]]\nfrom = \"10.0.0.5\"\nto = \"10.0.1.5\"\nfunctions = \"read\"\n";
    let learned_policy = |request: &str, toml: String| crate::wire::LearnedPolicy {
        request: request.into(),
        toml,
        requests: 1,
    };
    let id = "0123456789abcdef0123456789abcdef";
    let mut b = IngestBatch {
        agent: "a1".into(),
        learned: vec![learned_policy(id, good.into())],
        ..IngestBatch::default()
    };
    assert_eq!(batch(&b), Ok(()));
    b.learned = vec![learned_policy("not-an-id", good.into())];
    assert_eq!(batch(&b).unwrap_err().field, "learned[0].request");
    b.learned = vec![learned_policy(
        id,
        format!("{good}\n[detectors.\"program.umas_stop\"]\nenabled = false\n"),
    )];
    let e = batch(&b).unwrap_err();
    assert_eq!(e.field, "learned[0].toml");
    assert!(e.to_string().contains("detectors"), "{e}");
    b.learned = vec![learned_policy(
        id,
        format!("{good}#{}", "x".repeat(MAX_POLICY_BYTES)),
    )];
    assert_eq!(batch(&b).unwrap_err().field, "learned[0].toml");
    b.learned = vec![learned_policy(id, good.into()); MAX_LEARNED_RECORDS + 1];
    assert_eq!(batch(&b).unwrap_err().field, "learned");
}
