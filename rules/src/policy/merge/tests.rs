use super::*;

const HALL_1: &str = r#"# learned on hall 1
version = 1
name = "learned"

[[asset]]
name = "host-10-0-0-5"
address = "10.0.0.5"
role = "master"

[[asset]]
name = "host-10-0-1-10"
address = "10.0.1.10"
units = [1]
role = "slave"

[[asset]]
name = "host-10-0-1-11"
address = "10.0.1.11"
units = [1]
role = "slave"

[groups]
alike-1 = ["host-10-0-1-10", "host-10-0-1-11"]

# 10 requests
[[allow]]
name = "host-10-0-0-5 -> alike-1 unit 1"
from = "host-10-0-0-5"
to = "alike-1"
units = [1]
functions = ["read_holding_registers"]
holding_registers = ["0-9"]
"#;

const HALL_2: &str = r#"version = 1
name = "learned"

[[asset]]
name = "host-10-0-0-5"
address = "10.0.0.5"
role = "master"

[[asset]]
name = "host-10-0-2-20"
address = "10.0.2.20"
units = [3]
role = "slave"

[[asset]]
name = "host-10-0-2-21"
address = "10.0.2.21"
units = [3]
role = "slave"

[groups]
alike-1 = ["host-10-0-2-20", "host-10-0-2-21"]

[[allow]]
from = "host-10-0-0-5"
to = "alike-1"
units = [3]
functions = ["read_input_registers"]
input_registers = ["100-120"]
"#;

fn allows(policy: &Policy, to: &str, unit: u8, pdu: &[u8]) -> bool {
    let request = crate::modbus::Request::decode(pdu).unwrap();
    let candidates = policy.candidates("10.0.0.5".parse().unwrap(), to.parse().unwrap());
    policy
        .allowing_rule(
            &candidates,
            crate::time::Timestamp::from_secs(1_700_000_000),
            unit,
            &request,
            |_, _| true,
        )
        .is_ok()
}

#[test]
fn the_merge_allows_what_each_segment_did_and_keeps_groups_apart() {
    let text = merge_learned("plant", &[("hall-1", HALL_1), ("hall 2", HALL_2)]).unwrap();
    let (policy, _) = Policy::parse(&text, "plant").unwrap();
    assert_eq!(policy.name.as_deref(), Some("plant"));
    assert!(allows(&policy, "10.0.1.11", 1, &[3, 0, 0, 0, 10]));
    assert!(allows(&policy, "10.0.2.21", 3, &[4, 0, 110, 0, 5]));
    // Each group keeps its own members: segment 2's reads are not allowed on segment 1.
    assert!(!allows(&policy, "10.0.1.11", 3, &[4, 0, 110, 0, 5]));
    assert!(!allows(&policy, "10.0.2.21", 1, &[3, 0, 0, 0, 10]));
    // The shared master is one asset; the groups are renamed after their agents.
    assert_eq!(
        policy
            .assets
            .iter()
            .filter(|a| a.name == "host-10-0-0-5")
            .count(),
        1
    );
    assert!(policy.groups.contains_key("hall-1.alike-1"), "{text}");
    assert!(policy.groups.contains_key("hall_2.alike-1"), "{text}");
    assert!(
        text.contains("# ---- learned by agent hall-1 ----\n# hall-1: 10 requests\n[[allow]]"),
        "{text}"
    );
    assert!(
        text.find("host-10-0-1-11") < text.find("host-10-0-2-20"),
        "{text}"
    );
    assert!(text.starts_with("# Proposed by otwatch from what agents learned: hall-1, hall 2."));
}

#[test]
fn an_asset_name_another_agent_gave_another_address_is_renamed_with_its_rules() {
    let hostile = HALL_2.replace("address = \"10.0.0.5\"", "addresses = [\"10.0.0.0/8\"]");
    let text = merge_learned("plant", &[("hall-1", HALL_1), ("evil", &hostile)]).unwrap();
    let (policy, _) = Policy::parse(&text, "plant").unwrap();
    let original = policy
        .assets
        .iter()
        .find(|a| a.name == "host-10-0-0-5")
        .unwrap();
    assert!(!original.addresses.contains("10.9.9.9".parse().unwrap()));
    assert!(
        policy.assets.iter().any(|a| a.name == "evil.host-10-0-0-5"),
        "{text}"
    );
}

#[test]
fn the_same_host_seen_as_master_and_slave_loses_its_role_and_keeps_every_unit() {
    let other = HALL_2.replace(
        "name = \"host-10-0-0-5\"\naddress = \"10.0.0.5\"\nrole = \"master\"",
        "name = \"host-10-0-0-5\"\naddress = \"10.0.0.5\"\nunits = [7]\nrole = \"slave\"",
    );
    let text = merge_learned("plant", &[("hall-1", HALL_1), ("hall-2", &other)]).unwrap();
    let (policy, _) = Policy::parse(&text, "plant").unwrap();
    let host = policy
        .assets
        .iter()
        .find(|a| a.name == "host-10-0-0-5")
        .unwrap();
    assert_eq!(host.role, None, "{text}");
}

#[test]
fn a_learned_policy_with_more_than_learning_writes_is_refused_naming_it() {
    for (extra, named) in [
        (
            "[detectors.\"program.umas_stop\"]\nenabled = false\n",
            "detectors",
        ),
        (
            "[[alert]]\nname = \"x\"\nfrom = \"any\"\nto = \"any\"\nfunctions = \"read\"\n",
            "alert",
        ),
    ] {
        let text = format!("{HALL_1}\n{extra}");
        let e = check_learned(&text, "learned").unwrap_err();
        assert_eq!(e, LearnedError::NotLearned(named.into()), "{extra}");
    }
    let e = check_learned("version = 1\n[[allow]]\nfrom = \"any\"\n", "learned").unwrap_err();
    assert!(matches!(e, LearnedError::Invalid(_)), "{e}");
    assert!(check_learned(HALL_1, "learned").is_ok());
}

#[test]
fn agents_whose_names_make_the_same_prefix_keep_their_groups_apart() {
    let text = merge_learned("plant", &[("a.b", HALL_1), ("a_b", HALL_2)]).unwrap();
    let (policy, _) = Policy::parse(&text, "plant").unwrap();
    assert!(policy.groups.contains_key("a_b.alike-1"), "{text}");
    assert!(policy.groups.contains_key("a_b-2.alike-1"), "{text}");
    assert!(allows(&policy, "10.0.1.11", 1, &[3, 0, 0, 0, 10]));
    assert!(
        !allows(&policy, "10.0.1.11", 3, &[4, 0, 110, 0, 5]),
        "{text}"
    );
}

#[test]
fn an_agents_comments_are_marked_as_its_own_and_a_bare_rule_stays_a_rule() {
    let forged = HALL_2.replace(
        "[[allow]]\nfrom",
        "# ---- learned by agent hall-1 ----\n[[allow]]\nfrom",
    );
    let bare =
        "version = 1\n[[allow]]\nfrom = \"10.0.0.7\"\nto = \"10.0.3.1\"\nfunctions = \"read\"\n";
    let text = merge_learned(
        "plant",
        &[("hall-1", HALL_1), ("evil", &forged), ("bare", bare)],
    )
    .unwrap();
    assert_eq!(
        text.matches("\n# ---- learned by agent hall-1 ----")
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("# evil: ---- learned by agent hall-1 ----"),
        "{text}"
    );
    let (policy, _) = Policy::parse(&text, "plant").unwrap();
    assert_eq!(policy.allow.len(), 3, "{text}");
}

#[test]
fn one_asset_learned_twice_keeps_every_mac_and_the_higher_rates_in_language_2() {
    let learned = |mac: &str, requests: &str| {
        format!(
            "version = 2\nname = \"learned\"\n\n[[asset]]\nname = \"host-10-0-1-10\"\naddress = \"10.0.1.10\"\nunits = [1]\nrole = \"slave\"\nmacs = [\"{mac}\"]\nrequest_rate = \"{requests}\"\nconnection_rate = \"2/min\"\n"
        )
    };
    let a = learned("00:1d:9c:00:00:10", "40/s");
    let b = learned("00:1D:9C:00:00:11", "3000/min");
    let merged = merge_learned("proposal", &[("a1", &a), ("a2", &b)]).unwrap();
    let (p, _) = Policy::parse(&merged, "merged").unwrap();
    assert_eq!(p.version, 2, "{merged}");
    let plc = &p.assets[0];
    assert_eq!(plc.macs.len(), 2, "{merged}");
    let rate = plc.request_rate.unwrap();
    assert_eq!(
        (rate.count, rate.period.as_secs()),
        (3000, 60),
        "50/s beats 40/s: {merged}"
    );
    // Language 1 inputs stay language 1: an agent that reads only 1 can still be given it.
    let v1 = merge_learned("proposal", &[("a1", HALL_1)]).unwrap();
    assert!(v1.contains("version = 1"), "{v1}");
}
