//! The policy language on arbitrary text: parsing, compiling and linting, as `check`, the
//! agent and (with central policies) the collector run them on a file from anywhere. None may
//! panic; every alert rule a policy that compiles defines has an id ingest takes (nothing
//! `check` accepts is refused at ingest); a refusal names a line, a column and a field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_rules::policy::{AlertRule, Policy};
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
        }
        Err(e) => {
            assert!(e.line >= 1 && e.column >= 1, "{e:?}");
            assert!(!e.field.is_empty(), "{e:?}");
        }
    }
});
