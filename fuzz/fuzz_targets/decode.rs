//! Every decoder entry point on arbitrary bytes: PDUs both ways, MBAP splitting, RTU framing,
//! the protocol probe and the stream framer. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_rules::Direction;
use otwatch_rules::framing::{Encapsulation, Framer, probe};
use otwatch_rules::modbus::{Adu, Request, Response, RtuFrame};

fuzz_target!(|data: &[u8]| {
    let _ = Request::decode_prefix(data);
    let _ = Response::decode_prefix(data);
    let mut rest = data;
    while let Ok((_, after)) = Adu::split(rest) {
        rest = after;
    }
    for direction in [Direction::ToServer, Direction::ToClient] {
        let _ = RtuFrame::find(data, direction);
        let _ = probe(data, direction, true);
        let _ = probe(data, direction, false);
        for encapsulation in [Encapsulation::Mbap, Encapsulation::Rtu] {
            let mut framer = Framer::new(encapsulation, direction);
            let (a, b) = data.split_at(data.len() / 2);
            framer.push(a, &mut |_| {});
            framer.gap(&mut |_| {});
            framer.push(b, &mut |_| {});
            framer.turn(&mut |_| {});
            framer.finish(&mut |_| {});
        }
    }
});
