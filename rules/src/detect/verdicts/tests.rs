use super::*;
use crate::modbus::{Request, Table};

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

#[test]
fn a_set_keeps_its_two_most_recent_shapes() {
    let mut v = Verdicts::default();
    let a = holding(0);
    let same_set: Vec<u64> = (1..4096)
        .map(holding)
        .filter(|s| set_of(*s) == set_of(a))
        .take(2)
        .collect();
    let (b, c) = (same_set[0], same_set[1]);
    assert_eq!(v.get(a), None);
    v.insert(a, 7, true);
    v.insert(b, 8, false);
    assert_eq!(v.get(a), Some((7, true)));
    assert_eq!(v.get(b), Some((8, false)));
    v.insert(c, 9, false);
    assert_eq!(v.get(a), None, "the oldest of three goes");
    assert_eq!(v.get(b), Some((8, false)));
    assert_eq!(v.get(c), Some((9, false)));
    v.insert(c, 65_536, false);
    assert_eq!(
        v.get(c),
        Some((9, false)),
        "indexes past 16 bits are not stored"
    );
    v.clear();
    assert_eq!(v.get(c), None);
}
