use super::*;
use crate::policy_file::PolicyLoadError;

fn detection() -> Detection<Vec<u8>> {
    Detection::new(DetectionConfig::default(), None, Some(Vec::new()), false)
}

#[test]
fn loaded_policy_takes_over() {
    let mut d = detection();
    let (policy, _) = Policy::parse("version = 1\nname = \"new\"\n", "p.toml").unwrap();
    d.apply_reload(
        Reload::Loaded(Arc::new(policy), Vec::new()),
        Timestamp::from_secs(1),
        "127.0.0.1:0".parse().unwrap(),
    );
    assert_eq!(d.policy().and_then(|p| p.name.as_deref()), Some("new"));
    assert_eq!(d.counts().total, 0);
}

#[test]
fn rejected_policy_keeps_the_old_one_and_raises_an_alert_saying_why() {
    let mut d = detection();
    let error = Policy::parse("version = 9\n", "p.toml").unwrap_err();
    d.apply_reload(
        Reload::Rejected(PolicyLoadError::Invalid(error)),
        Timestamp::from_secs(1),
        "10.0.0.2:0".parse().unwrap(),
    );
    assert!(d.policy().is_none());
    assert_eq!(
        d.counts().by_rule.get("agent.policy_reload_failed"),
        Some(&1)
    );
    assert_eq!(
        d.finish_log().unwrap(),
        Some(1),
        "the alert is written like any other"
    );
}
