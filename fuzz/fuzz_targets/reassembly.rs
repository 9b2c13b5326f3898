//! Arbitrary TCP segment sequences (any sequence numbers, flags, payloads, acknowledgements)
//! through reassembly and a Modbus session, both directions. None may panic, and reassembly
//! never holds more than its limit.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use otwatch_rules::Direction;
use otwatch_rules::reassembly::{Reassembler, ReassemblyLimits, SegmentFlags, StreamEvent};
use otwatch_rules::session::{Session, SessionHints};
use otwatch_rules::time::Timestamp;
use otwatch_rules::transaction::TrackerConfig;

#[derive(Debug, Arbitrary)]
struct Segment {
    to_server: bool,
    seq: u32,
    syn: bool,
    fin: bool,
    ack: Option<u32>,
    payload: Vec<u8>,
    advance_ms: u16,
}

#[derive(Debug, Arbitrary)]
struct Input {
    on_modbus_port: bool,
    orientation_known: bool,
    segments: Vec<Segment>,
}

fuzz_target!(|input: Input| {
    let limits = ReassemblyLimits {
        max_buffered_bytes: 4096,
        max_buffered_segments: 16,
        max_window: 1 << 16,
    };
    let mut streams = [Reassembler::new(limits), Reassembler::new(limits)];
    let hints = SessionHints {
        on_modbus_port: input.on_modbus_port,
        orientation_known: input.orientation_known,
    };
    let mut session = Session::new(hints, TrackerConfig::default());
    let mut now = Timestamp::from_secs(1);
    for s in &input.segments {
        now = now.saturating_add(std::time::Duration::from_millis(u64::from(s.advance_ms)));
        let (i, direction) = if s.to_server {
            (0, Direction::ToServer)
        } else {
            (1, Direction::ToClient)
        };
        let flags = SegmentFlags {
            syn: s.syn,
            fin: s.fin,
        };
        let [a, b] = &mut streams;
        let (this, other) = if i == 0 { (a, b) } else { (b, a) };
        let mut deliver = |direction: Direction, event: StreamEvent<'_>| match event {
            StreamEvent::Data(d) => session.stream(now, direction, d, &mut |_| {}),
            StreamEvent::Gap { .. } => session.gap(direction, &mut |_| {}),
            _ => {}
        };
        this.segment(s.seq, flags, &s.payload, &mut |e| deliver(direction, e));
        if let Some(ack) = s.ack {
            other.acknowledged(ack, &mut |e| deliver(direction.reverse(), e));
        }
        assert!(this.buffered() <= limits.max_buffered_bytes);
        session.expire(now, &mut |_| {});
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let direction = if i == 0 {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        stream.flush(&mut |e| {
            if let StreamEvent::Data(d) = e {
                session.stream(now, direction, d, &mut |_| {});
            }
        });
    }
    session.close(now, &mut |_| {});
});
