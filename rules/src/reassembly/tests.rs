use super::*;

#[derive(Debug, Default)]
struct Seen {
    data: Vec<u8>,
    gaps: Vec<u64>,
    retransmitted: usize,
    conflicts: usize,
}

impl Seen {
    fn sink(&mut self) -> impl FnMut(StreamEvent<'_>) + '_ {
        |event| match event {
            StreamEvent::Data(d) => self.data.extend_from_slice(d),
            StreamEvent::Gap { bytes } => self.gaps.push(bytes),
            StreamEvent::Retransmission { bytes } => self.retransmitted += bytes,
            StreamEvent::OverlapConflict { bytes } => self.conflicts += bytes,
        }
    }
}

const DATA: SegmentFlags = SegmentFlags {
    syn: false,
    fin: false,
};
const SYN: SegmentFlags = SegmentFlags {
    syn: true,
    fin: false,
};

#[test]
fn in_order_segments_after_syn_are_delivered_in_order() {
    let mut r = Reassembler::default();
    let mut seen = Seen::default();
    r.segment(99, SYN, b"", &mut seen.sink());
    r.segment(100, DATA, b"abc", &mut seen.sink());
    r.segment(103, DATA, b"def", &mut seen.sink());
    assert_eq!(seen.data, b"abcdef");
    assert_eq!(r.delivered(), 6);
}

#[test]
fn out_of_order_segments_wait_for_the_hole() {
    let mut r = Reassembler::default();
    let mut seen = Seen::default();
    r.segment(0, SYN, b"", &mut seen.sink());
    r.segment(4, DATA, b"def", &mut seen.sink());
    assert!(seen.data.is_empty());
    assert_eq!(r.buffered(), 3);
    r.segment(1, DATA, b"abc", &mut seen.sink());
    assert_eq!(seen.data, b"abcdef");
    assert_eq!(r.buffered(), 0);
}

#[test]
fn retransmission_is_not_delivered_twice() {
    let mut r = Reassembler::default();
    let mut seen = Seen::default();
    r.segment(10, DATA, b"abcd", &mut seen.sink());
    r.segment(10, DATA, b"abcd", &mut seen.sink());
    assert_eq!(seen.data, b"abcd");
    assert_eq!(seen.retransmitted, 4);
    assert_eq!(seen.conflicts, 0);
}

#[test]
fn retransmission_with_new_tail_delivers_only_the_tail() {
    let mut r = Reassembler::default();
    let mut seen = Seen::default();
    r.segment(10, DATA, b"abcd", &mut seen.sink());
    r.segment(12, DATA, b"cdef", &mut seen.sink());
    assert_eq!(seen.data, b"abcdef");
    assert_eq!(seen.retransmitted, 2);
}

#[test]
fn conflicting_overlap_is_reported_and_first_copy_wins() {
    let mut r = Reassembler::default();
    let mut seen = Seen::default();
    r.segment(10, DATA, b"abcd", &mut seen.sink());
    r.segment(10, DATA, b"abXY", &mut seen.sink());
    assert_eq!(seen.data, b"abcd");
    assert_eq!(seen.conflicts, 4);
}

#[test]
fn conflicting_out_of_order_copies_are_reported() {
    let mut r = Reassembler::default();
    let mut seen = Seen::default();
    r.segment(0, DATA, b"a", &mut seen.sink());
    r.segment(5, DATA, b"xyz", &mut seen.sink());
    r.segment(5, DATA, b"xqz", &mut seen.sink());
    assert_eq!(seen.conflicts, 3);
}

#[test]
fn acknowledged_bytes_never_captured_become_a_gap() {
    let mut r = Reassembler::default();
    let mut seen = Seen::default();
    r.segment(0, DATA, b"abc", &mut seen.sink());
    r.acknowledged(10, &mut seen.sink());
    assert_eq!(seen.gaps, vec![7]);
    r.segment(10, DATA, b"xyz", &mut seen.sink());
    assert_eq!(seen.data, b"abcxyz");
}

#[test]
fn acknowledged_hole_releases_buffered_segments() {
    let mut r = Reassembler::default();
    let mut seen = Seen::default();
    r.segment(0, DATA, b"ab", &mut seen.sink());
    r.segment(5, DATA, b"fgh", &mut seen.sink());
    r.acknowledged(8, &mut seen.sink());
    assert_eq!(seen.gaps, vec![3]);
    assert_eq!(seen.data, b"abfgh");
}

#[test]
fn acknowledging_the_fin_is_not_a_gap() {
    let mut r = Reassembler::default();
    let mut seen = Seen::default();
    r.segment(
        0,
        SegmentFlags {
            syn: false,
            fin: true,
        },
        b"abc",
        &mut seen.sink(),
    );
    r.acknowledged(4, &mut seen.sink());
    assert!(seen.gaps.is_empty());
}

#[test]
fn buffer_limit_turns_a_hole_into_a_gap() {
    let limits = ReassemblyLimits {
        max_buffered_bytes: 8,
        ..ReassemblyLimits::default()
    };
    let mut r = Reassembler::new(limits);
    let mut seen = Seen::default();
    r.segment(0, DATA, b"a", &mut seen.sink());
    r.segment(10, DATA, b"0123", &mut seen.sink());
    r.segment(14, DATA, b"4567", &mut seen.sink());
    r.segment(18, DATA, b"89", &mut seen.sink());
    assert_eq!(seen.gaps, vec![9]);
    assert_eq!(seen.data, b"a0123456789");
    assert_eq!(r.buffered(), 0);
}

#[test]
fn segment_far_beyond_the_window_jumps_with_a_gap() {
    let mut r = Reassembler::default();
    let mut seen = Seen::default();
    r.segment(0, DATA, b"a", &mut seen.sink());
    r.segment(1 + (4 << 20), DATA, b"b", &mut seen.sink());
    assert_eq!(seen.gaps, vec![4 << 20]);
    assert_eq!(seen.data, b"ab");
}

#[test]
fn sequence_numbers_wrap_around() {
    let mut r = Reassembler::default();
    let mut seen = Seen::default();
    r.segment(u32::MAX - 1, DATA, b"abc", &mut seen.sink());
    r.segment(1, DATA, b"def", &mut seen.sink());
    assert_eq!(seen.data, b"abcdef");
}

#[test]
fn flush_delivers_what_is_buffered_after_a_gap() {
    let mut r = Reassembler::default();
    let mut seen = Seen::default();
    r.segment(0, DATA, b"a", &mut seen.sink());
    r.segment(3, DATA, b"d", &mut seen.sink());
    r.flush(&mut seen.sink());
    assert_eq!(seen.gaps, vec![2]);
    assert_eq!(seen.data, b"ad");
}
