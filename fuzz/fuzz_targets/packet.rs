//! Arbitrary captured frames through the whole packet path (dissection, IPv4
//! defragmentation, flow table, reassembly, sessions) on every supported link type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_packet::flow_table::FlowConfig;
use otwatch_packet::frame::{CapturedPacket, LinkType};
use otwatch_packet::modbus_counters::ModbusCounters;
use otwatch_packet::pipeline::Pipeline;
use otwatch_rules::time::Timestamp;

const LINKS: [LinkType; 6] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::RawIp,
    LinkType::Null,
    LinkType::Ipv6,
];

fuzz_target!(|data: &[u8]| {
    let config = FlowConfig {
        max_flows: 8,
        ..FlowConfig::default()
    };
    let mut pipeline = Pipeline::new(config, ModbusCounters::default());
    // The input is a sequence of frames: [link selector][length][bytes]...
    let mut rest = data;
    let mut ms = 0u64;
    while let [selector, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (frame, after) = tail.split_at(len);
        ms += u64::from(*selector);
        let packet = CapturedPacket {
            ts: Timestamp::from_nanos(ms * 1_000_000),
            link: LINKS[usize::from(*selector) % LINKS.len()],
            data: frame,
            orig_len: frame.len() as u32,
        };
        pipeline.packet(&packet);
        rest = after;
    }
    pipeline.finish();
});
