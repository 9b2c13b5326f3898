//! The policy language on arbitrary text: parsing, compiling and linting, as `check`, the
//! agent and (with central policies) the collector run them on a file from anywhere. None may
//! panic; every alert rule a policy that compiles defines has an id ingest takes (nothing
//! `check` accepts is refused at ingest); a refusal names a line, a column and a field. What
//! an agent may send as learned (`check_learned`) merges with another agent's into a valid
//! proposal, and "allow this" on it never panics and offers only valid policies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_rules::alert::{Alert, SCHEMA_VERSION, Severity};
use otwatch_rules::policy::{
    AlertRule, NotAllowable, Policy, allow_this, check_learned, merge_learned,
};
use otwatch_rules::time::Timestamp;
use otwatch_rules::validate;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text, "fuzz.toml") {
        Ok((policy, _warnings)) => {
            for rule in &policy.alerts {
                let id = AlertRule::rule_id_of(&rule.name);
                assert!(
                    validate::is_rule_id(&id),
                    "check took {id:?}, ingest would not"
                );
            }
            if check_learned(text, "fuzz").is_ok() {
                if let Err(e) = merge_learned("p", &[("a", text), ("a.b", text), ("a_b", text)]) {
                    panic!("two learned policies do not merge: {e}");
                }
            }
            match allow_this(text, &alert()) {
                Ok(change) => assert!(Policy::parse(&change.text, "changed").is_ok()),
                Err(NotAllowable::Invalid(e)) => panic!("an invalid change: {e}"),
                Err(_) => {}
            }
        }
        Err(e) => {
            assert!(e.line >= 1 && e.column >= 1, "{e:?}");
            assert!(!e.field.is_empty(), "{e:?}");
        }
    }
});

/// A write of 7 to holding register 100 of unit 1 at 10.0.0.9 from 10.0.0.5, as "allow this"
/// gets it.
fn alert() -> Alert {
    let ts = Timestamp::from_secs(1_700_000_000);
    Alert {
        schema: SCHEMA_VERSION,
        id: "0123456789abcdef0123456789abcdef".into(),
        ts,
        agent: "a1".into(),
        severity: Severity::High,
        rule: "policy.unauthorized_write".into(),
        title: "t".into(),
        technique: Vec::new(),
        src_ip: [10, 0, 0, 5].into(),
        src_port: 40_000,
        dst_ip: [10, 0, 0, 9].into(),
        dst_port: 502,
        unit_id: Some(1),
        function_code: Some(6),
        function: Some("write_single_register".into()),
        address: Some(100),
        quantity: Some(1),
        values: Some(vec![7]),
        exception: None,
        count: 1,
        first_ts: ts,
        evidence: Some("000100000006010600640007".into()),
        flow: 1,
        message: Some("(closest allow rule: x)".into()),
        seen: None,
    }
}
