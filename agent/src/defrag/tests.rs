use super::*;

fn fragment(offset_bytes: u16, more: bool, payload: &[u8]) -> Fragment<'_> {
    Fragment {
        vlan: 0,
        src: "10.0.0.66".parse().unwrap(),
        dst: "10.0.0.10".parse().unwrap(),
        id: 7,
        protocol: 6,
        offset: offset_bytes / 8,
        more,
        payload,
    }
}

const NOW: Timestamp = Timestamp::from_secs(100);

#[test]
fn fragments_in_any_order_make_the_datagram() {
    let mut d = Defragmenter::default();
    assert_eq!(
        d.add(NOW, &fragment(8, false, b"second")),
        Reassembly::Incomplete
    );
    assert_eq!(
        d.add(NOW, &fragment(0, true, b"first...")),
        Reassembly::Complete(b"first...second".to_vec())
    );
}

#[test]
fn a_fragment_overlapping_an_earlier_one_drops_the_datagram_instead_of_rewriting_it() {
    // The second fragment would rewrite bytes 8..16 of the first: what the device acts on and
    // what the agent reassembles could then differ.
    let mut d = Defragmenter::default();
    assert_eq!(
        d.add(NOW, &fragment(0, true, b"benign..benign..")),
        Reassembly::Incomplete
    );
    assert_eq!(
        d.add(NOW, &fragment(8, false, b"EVIL....tail")),
        Reassembly::Invalid
    );
    // Nothing of it is left: the rest of the datagram alone does not complete it.
    assert_eq!(
        d.add(NOW, &fragment(16, false, b"tail")),
        Reassembly::Incomplete
    );
}

#[test]
fn a_fragment_overlapping_a_later_one_drops_the_datagram_too() {
    let mut d = Defragmenter::default();
    assert_eq!(
        d.add(NOW, &fragment(16, false, b"tail")),
        Reassembly::Incomplete
    );
    assert_eq!(
        d.add(NOW, &fragment(0, true, b"head....head....more....")),
        Reassembly::Invalid
    );
}

#[test]
fn a_repeated_fragment_is_an_overlap() {
    let mut d = Defragmenter::default();
    assert_eq!(
        d.add(NOW, &fragment(0, true, b"head....")),
        Reassembly::Incomplete
    );
    assert_eq!(
        d.add(NOW, &fragment(0, true, b"HEAD....")),
        Reassembly::Invalid
    );
}
