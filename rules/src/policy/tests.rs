use super::*;
use crate::modbus::Table;

const GOOD: &str = r#"
version = 1
name = "plant"
utc_offset = "+01:00"

[[asset]]
name = "scada"
address = "10.0.0.9"
role = "master"
zone = "control"
criticality = "high"

[[asset]]
name = "plc-1"
address = "10.0.1.10"
units = [1, 2]
role = "slave"

[[asset]]
name = "cell-2"
addresses = ["10.0.2.0/24", "fd00::/64"]
role = "slave"

[groups]
plcs = ["plc-1", "cell-2"]

[[allow]]
from = "scada"
to = "plcs"
functions = ["read", 6, "8/0", "43/14"]
holding_registers = ["0-99", 400]
coils = "0-15"
write_values = { min = 0, max = 100 }
rate = "50/s"
hours = "06:00-22:00"
days = ["mon", "tue", "wed", "thu", "fri"]

[[alert]]
name = "setpoints"
from = "any"
to = "plc-1"
functions = "write"
severity = "medium"
technique = "T0836"

[detectors."recon.read_device_id"]
severity = "info"
window = "10m"
"#;

fn error(text: &str) -> PolicyError {
    Policy::parse(text, "p.toml").unwrap_err()
}

#[test]
fn complete_policy_parses_into_its_parts() {
    let (p, warnings) = Policy::parse(GOOD, "p.toml").unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(p.assets.len(), 3);
    assert_eq!(p.groups["plcs"], vec!["plc-1", "cell-2"]);
    assert_eq!(p.allow.len(), 1);
    assert_eq!(p.allow[0].line, 27);
    assert_eq!(p.allow[0].name, "allow[0]");
    assert_eq!(p.alerts[0].technique, vec!["T0836"]);
    assert_eq!(p.utc_offset_minutes, 60);
    assert_eq!(
        p.tuning["recon.read_device_id"].severity,
        Some(Severity::Info)
    );
    assert_eq!(p.hash.len(), 16);
    let m = &p.allow[0].matcher;
    assert!(m.to.contains("10.0.2.77".parse().unwrap()));
    assert!(m.to.contains("fd00::1".parse().unwrap()));
    assert!(!m.to.contains("10.0.3.1".parse().unwrap()));
    assert!(
        m.units.contains(1) && m.units.contains(200),
        "cell-2 answers for every unit"
    );
}

#[test]
fn unknown_asset_in_from_names_line_field_and_what_was_expected() {
    let text = GOOD.replace("from = \"scada\"", "from = \"scadaa\"");
    let e = error(&text);
    assert_eq!((e.line, e.field.as_str()), (28, "allow[0].from"));
    assert!(e.message.contains("\"scadaa\""), "{e}");
    assert!(e.message.contains("expected an asset or group name"), "{e}");
    assert!(e.to_string().starts_with("p.toml:28:"), "{e}");
}

#[test]
fn read_values_per_register_range_compile_and_bad_entries_name_their_field() {
    let with = |read_values: &str| {
        GOOD.replace(
            "write_values = { min = 0, max = 100 }",
            &format!("write_values = {{ min = 0, max = 100 }}\nread_values = {read_values}"),
        )
    };
    let text = with(
        "[\n  { holding_registers = \"0-1\", min = 0, max = 1000 },\n  { input_registers = [3, \"7-9\"], min = 150, max = 350 },\n  { min = 0, max = 5000 },\n]",
    );
    let (p, _) = Policy::parse(&text, "p.toml").unwrap();
    let limits = p.allow[0].matcher.read_values.as_deref().unwrap();
    let of = |table, address| limits.of(Some((table, address))).map(|b| (b.min, b.max));
    assert_eq!(of(Table::HoldingRegisters, 1), Some((0, 1000)));
    assert_eq!(of(Table::InputRegisters, 8), Some((150, 350)));
    assert_eq!(of(Table::InputRegisters, 1), Some((0, 5000)), "the rest");
    assert_eq!(
        limits.of(None).map(|b| b.max),
        Some(5000),
        "a FIFO's values"
    );
    for (bad, field, says) in [
        (
            "[{ holding_registers = \"0\", input_registers = \"0\", min = 1 }]",
            "allow[0].read_values[0]",
            "one table per entry",
        ),
        (
            "[{ min = 1 }, { max = 9 }]",
            "allow[0].read_values[1]",
            "one entry for the rest",
        ),
        (
            "[{ holding_registers = \"9-2\", min = 1 }]",
            "allow[0].read_values[0].holding_registers",
            "start <= end",
        ),
        (
            "[{ holding_registers = \"2\", min = 9, max = 1 }]",
            "allow[0].read_values[0]",
            "min <= max",
        ),
    ] {
        let e = error(&with(bad));
        assert_eq!(e.field, field, "{bad}: {e}");
        assert!(e.message.contains(says), "{bad}: {e}");
    }
    // Overlapping ranges: the first entry that covers a register is its bound.
    let text = with(
        "[{ holding_registers = [\"5-9\", \"65530-65535\"], max = 10 }, { holding_registers = \"0-65535\", max = 20 }]",
    );
    let (p, _) = Policy::parse(&text, "p.toml").unwrap();
    let limits = p.allow[0].matcher.read_values.as_deref().unwrap();
    let max = |address| {
        limits
            .of(Some((Table::HoldingRegisters, address)))
            .map(|b| b.max)
    };
    assert_eq!(
        [0, 5, 9, 10, 65529, 65530, 65535].map(max),
        [20, 10, 10, 20, 20, 10, 10].map(Some)
    );
    // A mistake inside an entry names the entry and the key.
    let e = error(&with("[{ min = 1 }, { coils = \"0\", min = 1 }]"));
    assert_eq!(e.field, "allow[0].read_values[1]", "{e}");
    assert!(e.message.contains("coils"), "{e}");
    let e = error(&with("\"0-1000\""));
    assert!(e.message.contains("expected { min"), "{e}");
    // One range alone needs no list.
    let (p, _) = Policy::parse(&with("{ input_registers = \"5\", max = 9 }"), "p.toml").unwrap();
    let limits = p.allow[0].matcher.read_values.as_deref().unwrap();
    assert_eq!(
        limits.of(Some((Table::InputRegisters, 5))).map(|b| b.max),
        Some(9)
    );
    assert_eq!(limits.of(Some((Table::InputRegisters, 6))), None);
    let (_, warnings) = Policy::parse(&with("[]"), "p.toml").unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.message.contains("bounds nothing")),
        "{warnings:?}"
    );
    // Bounds of registers the rule does not let be read are never checked: a warning.
    let (_, warnings) = Policy::parse(
        &with("[{ holding_registers = \"500\", max = 9 }]"),
        "p.toml",
    )
    .unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.message.contains("holding_registers 500-500")),
        "{warnings:?}"
    );
}

#[test]
fn misspelt_field_is_a_toml_error_with_its_line() {
    let text = GOOD.replace("from = \"scada\"", "form = \"scada\"");
    let e = error(&text);
    assert_eq!(e.field, "toml");
    assert!(e.message.contains("form"), "{e}");
    assert!(e.line >= 27, "{e}");
}

#[test]
fn each_bad_value_is_refused_with_its_field() {
    let cases = [
        (
            "address = \"10.0.0.9\"",
            "address = \"10.0.0.999\"",
            "asset[0].address",
        ),
        ("role = \"master\"", "role = \"boss\"", "asset[0].role"),
        (
            "criticality = \"high\"",
            "criticality = \"extreme\"",
            "asset[0].criticality",
        ),
        ("units = [1, 2]", "units = [1, 300]", "asset[1].units"),
        (
            "[\"0-99\", 400]",
            "[\"99-0\", 400]",
            "allow[0].holding_registers",
        ),
        ("\"8/0\"", "\"writ\"", "allow[0].functions"),
        ("\"8/0\"", "\"3/1\"", "allow[0].functions"),
        ("[\"read\", 6,", "[\"read\", 60,", "allow[0].functions"),
        (
            "min = 0, max = 100",
            "min = 200, max = 100",
            "allow[0].write_values",
        ),
        (
            "min = 0, max = 100",
            "min = 0, max = 70000",
            "allow[0].write_values",
        ),
        ("\"50/s\"", "\"50/fortnight\"", "allow[0].rate"),
        ("\"06:00-22:00\"", "\"6-22\"", "allow[0].hours"),
        ("\"fri\"", "\"funday\"", "allow[0].days"),
        (
            "technique = \"T0836\"",
            "technique = \"836\"",
            "alert[0].technique",
        ),
        (
            "severity = \"medium\"",
            "severity = \"urgent\"",
            "alert[0].severity",
        ),
        (
            "technique = \"T0836\"",
            "technique = \"T0836\\u0000\"",
            "alert[0].technique",
        ),
        (
            "name = \"setpoints\"",
            "name = \"set\\npoints\"",
            "alert[0].name",
        ),
        (
            "window = \"10m\"",
            "window = \"soon\"",
            "detectors.recon.read_device_id.window",
        ),
        (
            "utc_offset = \"+01:00\"",
            "utc_offset = \"CET\"",
            "utc_offset",
        ),
        ("version = 1", "version = 3", "version"),
        ("version = 1", "version = 0", "version"),
        (
            "plcs = [\"plc-1\", \"cell-2\"]",
            "plcs = [\"plc-1\", \"cell-3\"]",
            "groups.plcs",
        ),
    ];
    for (from, to, field) in cases {
        assert!(GOOD.contains(from), "{from}");
        let e = error(&GOOD.replacen(from, to, 1));
        assert_eq!(e.field, field, "{from} -> {to}: {e}");
        assert!(e.message.contains("expected"), "{e}");
    }
}

#[test]
fn unknown_detector_and_zero_threshold_are_refused() {
    let e = error(&format!(
        "{GOOD}\n[detectors.\"recon.nothing\"]\nenabled = false\n"
    ));
    assert_eq!(e.field, "detectors.recon.nothing");
    let e = error(&format!(
        "{GOOD}\n[detectors.\"recon.points_scan\"]\nthreshold = 0\n"
    ));
    assert_eq!(e.field, "detectors.recon.points_scan.threshold");
}

#[test]
fn duplicate_asset_and_alert_fields_in_allow_rules_are_refused() {
    let dup = GOOD.replacen("name = \"plc-1\"", "name = \"scada\"", 1);
    assert_eq!(error(&dup).field, "asset[1].name");
    let severity_in_allow =
        GOOD.replacen("rate = \"50/s\"", "rate = \"50/s\"\nseverity = \"high\"", 1);
    assert_eq!(error(&severity_in_allow).field, "allow[0].severity");
}

#[test]
fn later_rule_covered_by_an_earlier_one_is_reported_shadowed() {
    let text = format!(
        "{GOOD}\n[[allow]]\nname = \"narrow\"\nfrom = \"scada\"\nto = \"plc-1\"\nfunctions = \"read_holding_registers\"\nholding_registers = \"10-20\"\nwrite_values = {{ min = 10, max = 20 }}\nrate = \"5/s\"\nhours = \"06:00-22:00\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\n"
    );
    let (_, warnings) = Policy::parse(&text, "p.toml").unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].rule, "narrow");
    assert!(
        warnings[0]
            .message
            .contains("shadowed by rule \"allow[0]\"")
    );
}

/// Whether the policy `GOOD` plus `extra` warns that `rule` can never match.
fn never_matches(extra: &str, rule: &str) -> bool {
    let (_, warnings) = Policy::parse(&format!("{GOOD}\n{extra}"), "p.toml").unwrap();
    warnings
        .iter()
        .any(|w| w.rule == rule && w.message.contains("can never match"))
}

#[test]
fn rule_whose_functions_use_no_listed_table_can_never_match() {
    assert!(never_matches(
        "[[allow]]\nname = \"odd\"\nfrom = \"scada\"\nto = \"plc-1\"\nfunctions = \"read_coils\"\nholding_registers = \"0-9\"\n",
        "odd"
    ));
}

#[test]
fn rule_for_units_its_targets_do_not_answer_for_can_never_match() {
    assert!(never_matches(
        "[[allow]]\nname = \"wrong unit\"\nfrom = \"scada\"\nto = \"plc-1\"\nunits = [9]\nfunctions = \"read\"\n",
        "wrong unit"
    ));
}

#[test]
fn a_target_with_several_addresses_answers_for_its_units_in_the_unit_check() {
    // A redundant PLC pair with two addresses, answering for unit 5. A rule reaching both of
    // its addresses (listed in another order) for unit 6 can never match; a rule reaching only
    // one of them says nothing about the pair's units, so it is not warned about.
    let pair = "[[asset]]\nname = \"plc-pair\"\naddresses = [\"10.0.3.1\", \"10.0.3.2\"]\nunits = [5]\nrole = \"slave\"\n";
    let rule = |to: &str| {
        format!(
            "{pair}\n[[allow]]\nname = \"r\"\nfrom = \"scada\"\nto = {to}\nunits = [6]\nfunctions = \"read\"\n"
        )
    };
    assert!(never_matches(&rule("[\"10.0.3.2\", \"10.0.3.1\"]"), "r"));
    assert!(!never_matches(&rule("\"10.0.3.2\""), "r"));
}

#[test]
fn time_window_wraps_midnight_and_respects_days_and_offset() {
    let w = matcher::TimeWindow {
        start: 22 * 60,
        end: 6 * 60,
        days: matcher::TimeWindow::ALL_DAYS,
    };
    // 1970-01-01 was a Thursday.
    assert!(w.contains(Timestamp::from_secs(23 * 3600), 0));
    assert!(w.contains(Timestamp::from_secs(86_400 + 3600), 0));
    assert!(!w.contains(Timestamp::from_secs(12 * 3600), 0));
    assert!(
        w.contains(Timestamp::from_secs(21 * 3600), 60),
        "21:00 UTC is 22:00 at +01:00"
    );
    let weekdays = matcher::TimeWindow {
        start: 0,
        end: 24 * 60,
        days: 0b0011111,
    };
    assert!(weekdays.contains(Timestamp::from_secs(3600), 0), "Thursday");
    assert!(
        !weekdays.contains(Timestamp::from_secs(2 * 86_400 + 3600), 0),
        "Saturday"
    );
}

use crate::time::Timestamp;

#[test]
fn a_rate_bucket_holds_its_count_and_refills_count_per_period() {
    use crate::policy::matcher::{Rate, RateState};
    use crate::time::Timestamp;
    let rate = Rate::parse("3/s").unwrap();
    let t = |ms: u64| Timestamp::from_nanos(5_000_000_000 + ms * 1_000_000);
    let mut bucket = RateState::new(rate, t(0));
    let burst: Vec<bool> = (0..4).map(|_| bucket.take(rate, t(0))).collect();
    assert_eq!(
        burst,
        [true, true, true, false],
        "a full bucket holds three"
    );
    assert!(
        !bucket.take(rate, t(300)),
        "a third of a second less a little: no token yet"
    );
    assert!(bucket.take(rate, t(334)), "a third of a second refills one");
    assert!(!bucket.take(rate, t(334)));
    // A long silence refills the bucket to its count, no more.
    let later: Vec<bool> = (0..4).map(|_| bucket.take(rate, t(60_000))).collect();
    assert_eq!(later, [true, true, true, false]);
    // A capture stepping back in time neither refills nor breaks the bucket.
    assert!(!bucket.take(rate, t(59_000)));
}

#[test]
fn a_rate_bucket_at_the_largest_count_and_period_survives_the_longest_silence() {
    use crate::policy::matcher::{Rate, RateState};
    let rate = Rate {
        count: u32::MAX,
        period: std::time::Duration::from_secs(3600),
    };
    let mut bucket = RateState::new(rate, Timestamp::from_nanos(0));
    assert!(bucket.take(rate, Timestamp::from_nanos(0)));
    // Nearly 585 years of capture time later: the refill must saturate at the bucket's
    // capacity, not overflow (tests run with overflow checks).
    let end = Timestamp::from_nanos(u64::MAX);
    let burst = (0..3).filter(|_| bucket.take(rate, end)).count();
    assert_eq!(burst, 3);
}

#[test]
fn a_span_is_covered_only_when_one_merged_range_holds_all_of_it() {
    use crate::policy::matcher::RangeSet;
    let set = RangeSet::from_ranges(vec![(100, 100), (20, 29), (0, 9), (10, 12)]);
    assert_eq!(set.ranges(), &[(0, 12), (20, 29), (100, 100)]);
    let covered = |a, q| set.covers_span(a, q);
    assert!(covered(0, 13) && covered(20, 10) && covered(100, 1) && covered(50, 0));
    assert!(!covered(5, 10), "runs past 12");
    assert!(!covered(13, 1) && !covered(19, 2) && !covered(30, 1) && !covered(101, 1));
    assert!(!covered(65_535, 1) && !RangeSet::default().covers_span(0, 1));
    // Covering a whole set: the last address counts too.
    let all = RangeSet::from_ranges(vec![(0, 65_535)]);
    let but_one = RangeSet::from_ranges(vec![(0, 65_534)]);
    assert!(all.covers(&but_one) && !but_one.covers(&all) && set.covers(&set));
}

#[test]
fn version_2_declares_macs_routers_and_baselines_and_version_1_refuses_them() {
    let v2 = "version = 2\n[[asset]]\nname = \"plc\"\naddress = \"10.0.0.9\"\nmacs = [\"00:1D:9C:00:00:09\", \"00-1d-9c-00-00-99\"]\nconnection_rate = \"6/min\"\nrequest_rate = \"40/s\"\n[[asset]]\nname = \"gw\"\naddress = \"10.0.0.254\"\nrole = \"router\"\n";
    let (p, _) = Policy::parse(v2, "p.toml").unwrap();
    assert_eq!(p.version, 2);
    let plc = &p.assets[0];
    assert_eq!(
        plc.macs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["00:1d:9c:00:00:09", "00:1d:9c:00:00:99"]
    );
    assert_eq!(
        plc.connection_rate.map(|r| (r.count, r.period.as_secs())),
        Some((6, 60))
    );
    assert_eq!(
        plc.request_rate.map(|r| (r.count, r.period.as_secs())),
        Some((40, 1))
    );
    assert_eq!(p.assets[1].role, Some(Role::Router));
    for (what, field) in [
        ("macs = [\"00:1D:9C:00:00:09\"", "asset[0].macs"),
        ("connection_rate", "asset[0].connection_rate"),
        ("role = \"router\"", "asset[1].role"),
    ] {
        // In a version 1 file, each is refused with the version it needs.
        let mut v1 = v2.replacen("version = 2", "version = 1", 1);
        for other in [
            "macs = [\"00:1D:9C:00:00:09\", \"00-1d-9c-00-00-99\"]\n",
            "connection_rate = \"6/min\"\n",
            "request_rate = \"40/s\"\n",
            "role = \"router\"\n",
        ] {
            if !other.starts_with(what) {
                v1 = v1.replacen(other, "", 1);
            }
        }
        let e = error(&v1);
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains("version = 2"), "{e}");
    }
    for (bad, needle) in [
        ("macs = [\"00:1d:9c:00:00\"]", "six hex bytes"),
        ("macs = [\"01:00:5e:00:00:01\"]", "unicast"),
        (
            "macs = [\"00:1d:9c:00:00:09\", \"00:1D:9C:00:00:09\"]",
            "twice",
        ),
        ("connection_rate = \"lots\"", "not a rate"),
    ] {
        let text =
            format!("version = 2\n[[asset]]\nname = \"plc\"\naddress = \"10.0.0.9\"\n{bad}\n");
        let e = error(&text);
        assert!(e.field.starts_with("asset[0]."), "{e}");
        assert!(e.message.contains(needle), "{e}");
    }
}

#[test]
fn a_policy_knows_its_language_version_and_who_reads_it() {
    let (p, _) = Policy::parse(GOOD, "plant.toml").unwrap();
    assert_eq!(p.version, 1, "the version the file says");
    assert!(readable_by(p.version, POLICY_VERSION));
    assert!(readable_by(1, 2), "an agent reads every older version");
    assert!(!readable_by(2, 1), "an agent cannot read a newer version");
}

#[test]
fn an_offset_is_hours_and_minutes_of_digits_within_a_day_and_never_overflows() {
    for (offset, minutes) in [
        ("+01:00", Some(60)),
        ("-05:30", Some(-330)),
        ("+14:00", Some(840)),
    ] {
        assert_eq!(compile::parse_offset(offset), minutes, "{offset}");
    }
    for bad in [
        "+15:00",
        "+-5:00",
        "+01:60",
        "+1:5",
        "+0000000000000000002105037818:00",
        "+2147483647:00",
    ] {
        assert_eq!(compile::parse_offset(bad), None, "{bad}");
    }
}

#[test]
fn lint_warns_of_macs_on_a_network_and_a_router_without_macs() {
    let text = "version = 2\n[[asset]]\nname = \"cell\"\naddress = \"10.0.2.0/24\"\nmacs = [\"00:1d:9c:00:00:09\"]\n\n[[asset]]\nname = \"gw\"\naddress = \"10.0.0.254\"\nrole = \"router\"\n\n[[asset]]\nname = \"plc\"\naddress = \"10.0.0.9\"\nmacs = [\"00:1d:9c:00:00:19\"]\n";
    let (_, warnings) = Policy::parse(text, "p.toml").unwrap();
    let said: Vec<(usize, &str)> = warnings.iter().map(|w| (w.line, w.rule.as_str())).collect();
    assert_eq!(said, [(3, "asset cell"), (8, "asset gw")], "{warnings:?}");
    assert!(warnings[0].message.contains("covers a network"));
    assert!(warnings[1].message.contains("expected macs"));
}
