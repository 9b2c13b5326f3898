//! Evidence packets: any bytes as the pcap an agent sends as evidence, and any sequence of
//! frames through the agent's evidence buffer. The validator never panics, and what it takes
//! the project's own capture reader reads whole, frame for frame; the buffer stays within its
//! limits and consistent (its bytes those of its frames, the flow of the last frame last),
//! every flow that holds frames writes a pcap the validator takes, with as many frames as it
//! holds, ending with the frame just kept, and a forgotten flow holds nothing.
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
    // Frames through the buffer: each record is a control byte, a length byte, and that many
    // bytes of frame; limits come from the mode byte. The control byte's low 4 bits name the
    // flow; bit 7 forgets the flow instead; bit 6 makes the frame raw IP rather than Ethernet
    // (a flow keeps its first frame's link type and refuses the other).
    let limits = Limits {
        per_flow_packets: usize::from(mode >> 4) + 1,
        per_flow_bytes: usize::from(mode & 0x0e) * 64 + 64,
        total_bytes: 1024,
    };
    let mut buffer = EvidenceBuffer::new(limits);
    let mut at = rest;
    let mut ts = 0u64;
    while let [control, len, tail @ ..] = at {
        let n = usize::from(*len).min(tail.len());
        let (frame, next) = tail.split_at(n);
        at = next;
        ts += 1;
        let flow = u64::from(control & 0x0f);
        if control & 0x80 != 0 {
            buffer.forget(flow);
            assert_eq!(buffer.frames(flow), 0);
            assert_eq!(buffer.pcap(flow), None);
            assert!(buffer.is_consistent(), "inconsistent after forget");
            continue;
        }
        let link = if control & 0x40 != 0 {
            LinkType::RawIp
        } else {
            LinkType::Ethernet
        };
        let kept = buffer.keep(
            flow,
            &CapturedPacket {
                ts: Timestamp::from_nanos(ts),
                link,
                data: frame,
                orig_len: n as u32,
            },
        );
        assert!(buffer.is_consistent(), "inconsistent after keep");
        assert!(buffer.bytes() <= limits.total_bytes, "over the buffer's bytes");
        let held = buffer.frames(flow);
        assert!(held <= limits.per_flow_packets, "over a flow's frames");
        let pcap = buffer.pcap(flow);
        assert_eq!(pcap.is_some(), held > 0, "a flow holding frames writes a pcap");
        if let Some(pcap) = pcap {
            let summary =
                evidence::validate(&pcap).expect("the buffer writes what the validator takes");
            assert_eq!(summary.packets, held);
            if kept {
                // The pcap ends with the frame just kept, of this flow.
                let mut input = InMemory::new(&pcap, &[]);
                let mut decoder = CaptureDecoder::new();
                let mut last = None;
                while let Some(p) = decoder.next_packet(&mut input).expect("validated") {
                    last = Some((p.ts, p.link, p.data.to_vec()));
                }
                assert_eq!(last, Some((Timestamp::from_nanos(ts), link, frame.to_vec())));
            }
        } else {
            assert!(!kept, "a kept frame leaves its flow a pcap");
        }
    }
});
