use super::*;
use crate::modbus::{Request, Table};
use crate::time::Timestamp;

fn decoded(pdu: &[u8]) -> Request<'_> {
    Request::decode(pdu).unwrap()
}

fn holding(address: u16) -> u64 {
    let request = Request::Read {
        table: Table::HoldingRegisters,
        address,
        quantity: 1,
    };
    shape(1, &request).unwrap()
}

#[test]
fn shapes_tell_apart_unit_function_address_and_quantity_or_value() {
    let shapes = [
        shape(1, &decoded(&[3, 0, 10, 0, 2])),
        shape(2, &decoded(&[3, 0, 10, 0, 2])),
        shape(1, &decoded(&[4, 0, 10, 0, 2])),
        shape(1, &decoded(&[3, 0, 11, 0, 2])),
        shape(1, &decoded(&[3, 0, 10, 0, 3])),
        shape(1, &decoded(&[6, 0, 10, 0, 2])),
        shape(1, &decoded(&[6, 0, 10, 0, 3])),
        shape(1, &decoded(&[5, 0, 10, 0xff, 0])),
        shape(1, &decoded(&[5, 0, 10, 0, 0])),
    ];
    let mut seen: Vec<u64> = shapes.iter().map(|s| s.unwrap()).collect();
    assert!(seen.iter().all(|s| *s != 0));
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), shapes.len());
}

#[test]
fn requests_with_more_than_their_shape_are_not_remembered() {
    assert_eq!(shape(1, &decoded(&[16, 0, 0, 0, 1, 2, 0, 7])), None);
    assert_eq!(shape(1, &decoded(&[8, 0, 4, 0, 0])), None);
    assert_eq!(shape(1, &decoded(&[0x11])), None);
}

fn verdict(rule: usize, rated: bool) -> Recall {
    let mut recall = Recall::default();
    recall.set_verdict(Verdict {
        rule,
        rated,
        whole: rule.is_multiple_of(2),
    });
    recall
}

/// Three shapes that fall in the same set.
fn same_set() -> (u64, u64, u64) {
    let a = holding(0);
    let others: Vec<u64> = (1..4096)
        .map(holding)
        .filter(|s| set_of(*s) == set_of(a))
        .take(2)
        .collect();
    (a, others[0], others[1])
}

#[test]
fn a_set_keeps_its_two_most_recent_shapes() {
    let mut m = Memo::default();
    let (a, b, c) = same_set();
    assert_eq!(m.get(a), None);
    m.insert(a, verdict(7, true));
    m.insert(b, verdict(8, false));
    assert_eq!(m.get(a), Some(verdict(7, true)));
    assert_eq!(m.get(b), Some(verdict(8, false)));
    m.insert(c, verdict(9, false));
    assert_eq!(m.get(a), None, "the oldest of three goes");
    assert_eq!(m.get(b), Some(verdict(8, false)));
    assert_eq!(m.get(c), Some(verdict(9, false)));
    m.clear();
    assert_eq!(m.get(c), None);
}

#[test]
fn updating_a_shape_keeps_the_other_shape_of_its_set() {
    let mut m = Memo::default();
    let (a, b, _) = same_set();
    m.insert(a, verdict(7, false));
    m.insert(b, verdict(8, false));
    let later = Recall {
        windows_until: Timestamp::from_secs(60),
        ..verdict(7, false)
    };
    // `a` is the older entry of the set: updated, not inserted again over `b`.
    m.insert(a, later);
    assert_eq!(m.get(a), Some(later));
    assert_eq!(m.get(b), Some(verdict(8, false)));
    m.insert(b, Recall::default());
    assert_eq!(m.get(a), Some(later));
    assert_eq!(m.get(b), Some(Recall::default()));
}

#[test]
fn a_shape_without_a_verdict_keeps_its_window_end_and_rules_past_15_bits_are_not_kept() {
    let mut m = Memo::default();
    let (a, b, _) = same_set();
    let windows_only = Recall {
        windows_until: Timestamp::from_secs(5),
        ..Recall::default()
    };
    m.insert(a, windows_only);
    assert_eq!(m.get(a), Some(windows_only));
    for rule in [32_767, 32_768, 65_536, usize::MAX] {
        m.insert(b, verdict(rule, true));
        assert_eq!(m.get(b), Some(Recall::default()), "rule {rule}");
    }
    for rule in [32_766, 32_765, 0] {
        for rated in [true, false] {
            m.insert(b, verdict(rule, rated));
            let kept = m.get(b).and_then(Recall::verdict);
            let whole = rule.is_multiple_of(2);
            assert_eq!(kept, Some(Verdict { rule, rated, whole }), "rule {rule}");
        }
    }
}
