//! Evidence packets: any bytes as the pcap an agent sends as evidence, and any sequence of
//! frames through the agent's evidence buffer. The validator never panics, and what it takes
//! the project's own capture reader reads whole, frame for frame; the buffer stays within its
//! limits, and every flow that holds frames writes a pcap the validator takes, with as many
//! frames as it holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_packet::capture_file::{CaptureDecoder, InMemory};
use otwatch_packet::evidence::{self, EvidenceBuffer, Limits};
use otwatch_packet::frame::{CapturedPacket, LinkType};
use otwatch_rules::time::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        // A pcap from a hostile agent.
        if let Ok(summary) = evidence::validate(rest) {
            let mut input = InMemory::new(rest, &[]);
            let mut decoder = CaptureDecoder::new();
            let mut frames = 0;
            while let Some(p) = decoder.next_packet(&mut input).expect("validated, so readable") {
                assert!(!matches!(p.link, LinkType::Unsupported(_)));
                frames += 1;
            }
            assert_eq!(frames, summary.packets);
            assert!(frames >= 1 && frames <= evidence::MAX_EVIDENCE_PACKETS);
        }
        return;
    }
    // Frames through the buffer: each record is a flow byte, a length byte, and that many
    // bytes of frame; limits come from the mode byte.
    let limits = Limits {
        per_flow_packets: usize::from(mode >> 4) + 1,
        per_flow_bytes: usize::from(mode & 0x0e) * 64 + 64,
        total_bytes: 1024,
    };
    let mut buffer = EvidenceBuffer::new(limits);
    let mut last: std::collections::HashMap<u8, u64> = std::collections::HashMap::new();
    let mut at = rest;
    let mut ts = 0u64;
    while let [flow, len, tail @ ..] = at {
        let n = usize::from(*len).min(tail.len());
        let (frame, next) = tail.split_at(n);
        at = next;
        ts += 1;
        if *flow == 0xff {
            buffer.forget(0xff);
            continue;
        }
        buffer.keep(
            u64::from(*flow),
            &CapturedPacket {
                ts: Timestamp::from_nanos(ts),
                link: LinkType::Ethernet,
                data: frame,
                orig_len: n as u32,
            },
        );
        last.insert(*flow, ts);
        assert!(buffer.bytes() <= limits.total_bytes, "over the buffer's bytes");
    }
    for (flow, newest) in last {
        let flow = u64::from(flow);
        let held = buffer.frames(flow);
        assert!(held <= limits.per_flow_packets, "over a flow's frames");
        let pcap = buffer.pcap(flow);
        assert_eq!(pcap.is_some(), held > 0, "a flow holding frames writes a pcap");
        let Some(pcap) = pcap else {
            continue;
        };
        let summary = evidence::validate(&pcap).expect("the buffer writes what the validator takes");
        assert_eq!(summary.packets, held);
        // The frames held are the flow's own, none newer than its newest.
        assert!(summary.last.as_nanos() <= newest);
    }
});
