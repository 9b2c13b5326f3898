//! The command guard's connection core on hostile bytes from both sides: a client and a PLC
//! sending anything, in any cut, with the PLC going away. It may not panic; it never forwards
//! more requests than wait for an answer within its limit, and never answers the client more
//! often than the client asked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_rules::guard::{Action, Connection, Fail, Judgement, Mode, Settings};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, mut rest)) = data.split_first() else {
        return;
    };
    let settings = Settings {
        mode: if knobs & 1 == 0 {
            Mode::Monitor
        } else {
            Mode::Enforce
        },
        fail: if knobs & 2 == 0 {
            Fail::Closed
        } else {
            Fail::Open
        },
        exception: knobs >> 4,
        max_in_flight: usize::from(knobs >> 2 & 3) + 1,
    };
    let mut c = Connection::new(settings);
    let (mut decided, mut answered) = (0usize, 0usize);
    // Judged by the unit id: allow, block or fail.
    let mut judge = |unit: u8, _: &otwatch_rules::modbus::Request<'_>| match unit % 3 {
        0 => Judgement::Allow,
        1 => Judgement::Block { rule: "r".into() },
        _ => Judgement::Unjudgeable { reason: "x".into() },
    };
    while let Some((&step, after)) = rest.split_first() {
        let len = usize::from(step >> 2).min(after.len());
        let (chunk, tail) = after.split_at(len);
        rest = tail;
        let mut out = Vec::new();
        match step & 3 {
            0 | 1 => c.client_bytes(chunk, &mut judge, &mut out),
            2 => c.plc_bytes(chunk, &mut out),
            _ => c.plc_gone(&mut out),
        }
        for action in &out {
            match action {
                Action::Decided { .. } => decided += 1,
                Action::Client(_) => answered += 1,
                _ => {}
            }
        }
        assert!(answered <= decided, "more answers than requests");
        assert!(c.in_flight() <= settings.max_in_flight);
    }
});
