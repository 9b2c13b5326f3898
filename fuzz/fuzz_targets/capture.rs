//! Arbitrary bytes as a pcap or pcapng capture, delivered in reads of the sizes the input
//! chooses, as a pipe delivers them. None may panic or stall; the packets are the same as when
//! the whole capture arrives in one read, and so is the error's kind and place (its wording may
//! depend on how much of a damaged record had arrived: a length past the largest record is
//! refused before the parser sees the rest); the buffer stays within its bound, with the
//! limits in use and with small ones the input's records outgrow; a packet is never more than
//! the input; a truncated capture always lacks bytes it needs.
//!
//! Input: one byte `k`, then `k % 16` bytes of read sizes (each `16 * b + 1` bytes), then the
//! capture.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_packet::capture_file::{CHUNK, CaptureDecoder, CaptureError, InMemory, MAX_RECORD};
use otwatch_packet::frame::LinkType;

type Seen = (u64, LinkType, Vec<u8>, u32);

/// Decodes `bytes` in reads of `reads` bytes in turn, with a buffer of `chunk` bytes for
/// records of at most `max_record`.
fn decode(
    bytes: &[u8],
    reads: &[usize],
    (chunk, max_record): (usize, usize),
) -> (Vec<Seen>, Option<CaptureError>) {
    let mut decoder = CaptureDecoder::with_limits(chunk, max_record);
    let mut input = InMemory::new(bytes, reads);
    let mut packets = Vec::new();
    let error = loop {
        match decoder.next_packet(&mut input) {
            Ok(Some(p)) => {
                assert!(p.data.len() <= bytes.len(), "more packet than input");
                packets.push((p.ts.as_nanos(), p.link, p.data.to_vec(), p.orig_len));
                assert!(packets.len() <= bytes.len() / 12 + 1, "more packets than records");
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
        assert!(decoder.capacity() <= max_record + chunk.max(16), "the buffer outgrew its bound");
    };
    assert!(decoder.capacity() <= max_record + chunk.max(16), "the buffer outgrew its bound");
    assert_eq!(input.misuse, 0, "the decoder read after the end or into no room: a stall");
    if let Some(CaptureError::Truncated { needed, present, .. }) = error {
        assert!(needed == 0 || needed > present, "truncated with all it needs: a stall");
    }
    (packets, error)
}

/// What must not depend on the reads: the packets, and the error but for a corrupt record's
/// reason.
fn comparable((packets, error): (Vec<Seen>, Option<CaptureError>)) -> (Vec<Seen>, Option<CaptureError>) {
    let error = error.map(|e| match e {
        CaptureError::Corrupt { offset, .. } => CaptureError::Corrupt {
            offset,
            reason: String::new(),
        },
        other => other,
    });
    (packets, error)
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(k % 16).min(rest.len());
    let (sizes, capture) = rest.split_at(count);
    let reads: Vec<usize> = sizes.iter().map(|&b| 16 * usize::from(b) + 1).collect();
    // The limits in use, and small ones that the input's records outgrow.
    for limits in [(CHUNK, MAX_RECORD), (64, 1024)] {
        let whole = comparable(decode(capture, &[], limits));
        if !reads.is_empty() {
            let split = comparable(decode(capture, &reads, limits));
            assert_eq!(split, whole, "split into reads of {reads:?}, limits {limits:?}");
        }
        // One byte at a time, as the slowest pipe delivers it.
        if capture.len() <= 4096 {
            let bytes = comparable(decode(capture, &[1], limits));
            assert_eq!(bytes, whole, "split into single bytes, limits {limits:?}");
        }
    }
});
