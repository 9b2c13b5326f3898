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
fn a_repeated_fragment_is_ignored_and_the_first_bytes_stay() {
    // Mirror ports duplicate packets; Linux keeps the first copy of a fragment's bytes.
    let mut d = Defragmenter::default();
    assert_eq!(
        d.add(NOW, &fragment(0, true, b"head....")),
        Reassembly::Incomplete
    );
    assert_eq!(
        d.add(NOW, &fragment(0, true, b"HEAD....")),
        Reassembly::Incomplete
    );
    assert_eq!(
        d.add(NOW, &fragment(8, false, b"tail")),
        Reassembly::Complete(b"head....tail".to_vec())
    );
}

#[test]
fn a_fragment_inside_two_received_ones_is_a_duplicate_and_one_across_their_end_an_overlap() {
    let mut d = Defragmenter::default();
    d.add(NOW, &fragment(0, true, b"aaaaaaaa"));
    d.add(NOW, &fragment(8, true, b"bbbbbbbb"));
    assert_eq!(
        d.add(NOW, &fragment(0, true, b"XXXXXXXXYYYYYYYY")),
        Reassembly::Incomplete,
        "inside the run 0..16: ignored"
    );
    assert_eq!(
        d.add(NOW, &fragment(8, false, b"ZZZZZZZZzz")),
        Reassembly::Invalid,
        "8..18 runs past 16: an overlap"
    );
}

#[test]
fn an_empty_fragment_drops_the_datagram_and_cannot_hide_an_overlap() {
    let mut d = Defragmenter::default();
    assert_eq!(
        d.add(NOW, &fragment(0, true, b"benign..benign..")),
        Reassembly::Incomplete
    );
    assert_eq!(d.add(NOW, &fragment(0, true, b"")), Reassembly::Invalid);
    // What follows starts a datagram of its own, which the rewrite alone does not complete.
    assert_eq!(
        d.add(NOW, &fragment(8, true, b"EVIL....")),
        Reassembly::Incomplete
    );
    assert_eq!(
        d.add(NOW, &fragment(16, false, b"tail")),
        Reassembly::Incomplete
    );
}

#[test]
fn giving_up_on_every_datagram_counts_them_and_forgets_their_fragments() {
    let mut d = Defragmenter::default();
    d.add(NOW, &fragment(0, true, b"head...."));
    d.give_up_all();
    assert_eq!(d.dropped, 1);
    assert_eq!(
        d.add(NOW, &fragment(8, false, b"tail")),
        Reassembly::Incomplete
    );
}
