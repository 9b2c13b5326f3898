use etherparse::PacketBuilder;

use super::*;
use crate::frame::LinkType;
use crate::modbus_counters::ModbusCounters;
use otwatch_rules::time::Timestamp;

fn read_request(tid: u16) -> Vec<u8> {
    let mut adu = tid.to_be_bytes().to_vec();
    adu.extend_from_slice(&[0, 0, 0, 6, 1, 3, 0, 0, 0, 1]);
    adu
}

fn read_response(tid: u16) -> Vec<u8> {
    let mut adu = tid.to_be_bytes().to_vec();
    adu.extend_from_slice(&[0, 0, 0, 5, 1, 3, 2, 0, 7]);
    adu
}

struct Frame {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    syn: bool,
}

impl Frame {
    fn to_server(client_port: u16, seq: u32) -> Self {
        Self {
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
            sport: client_port,
            dport: 502,
            seq,
            syn: false,
        }
    }

    fn to_client(client_port: u16, seq: u32) -> Self {
        Self {
            src: [10, 0, 0, 2],
            dst: [10, 0, 0, 1],
            sport: 502,
            dport: client_port,
            seq,
            syn: false,
        }
    }

    fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let tcp = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(self.src, self.dst, 64)
            .tcp(self.sport, self.dport, self.seq, 1000);
        let tcp = if self.syn { tcp.syn() } else { tcp.ack(1) };
        tcp.write(&mut out, payload).unwrap();
        out
    }
}

fn feed(p: &mut Pipeline<ModbusCounters>, ms: u64, frame: &[u8]) {
    p.packet(&CapturedPacket {
        ts: Timestamp::from_nanos(ms * 1_000_000),
        link: LinkType::Ethernet,
        data: frame,
        orig_len: frame.len() as u32,
    });
}

fn answered(p: &Pipeline<ModbusCounters>) -> u64 {
    p.observer().transactions.answered
}

#[test]
fn fragmented_request_is_reassembled_and_decoded_and_overlapping_fragments_drop_it() {
    let whole = Frame::to_server(40000, 1).build(&read_request(1));
    // Split the IPv4 payload (TCP header + Modbus) into two fragments at 16 bytes.
    let (eth, ip) = whole.split_at(14);
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let (ip_header, body) = ip.split_at(header_len);
    let fragment = |offset: usize, data: &[u8], more: bool| {
        let mut h = ip_header.to_vec();
        let total = (header_len + data.len()) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        let flags_offset = ((offset / 8) as u16) | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&flags_offset.to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let mut frame = eth.to_vec();
        frame.extend_from_slice(&h);
        frame.extend_from_slice(data);
        frame
    };
    let mut p = Pipeline::new(FlowConfig::default(), ModbusCounters::default());
    feed(&mut p, 0, &fragment(16, &body[16..], false));
    feed(&mut p, 1, &fragment(0, &body[..16], true));
    feed(
        &mut p,
        2,
        &Frame::to_client(40000, 1).build(&read_response(1)),
    );
    assert_eq!(p.counters().fragments, 2);
    assert_eq!(p.counters().reassembled, 1);
    assert_eq!(answered(&p), 1);

    // Again, with a fragment that partly rewrites the first one's bytes before the datagram
    // is whole: the datagram is dropped and counted, nothing of it decoded.
    let mut p = Pipeline::new(FlowConfig::default(), ModbusCounters::default());
    feed(&mut p, 0, &fragment(0, &body[..16], true));
    feed(&mut p, 1, &fragment(8, &[0xff; 16], true));
    feed(&mut p, 2, &fragment(16, &body[16..], false));
    assert_eq!(p.counters().fragments, 3);
    assert_eq!(
        (p.counters().reassembled, p.counters().fragments_invalid),
        (0, 1)
    );
    assert_eq!(p.observer().requests.total(), 0);
}

#[test]
fn syn_scan_creates_no_modbus_state_and_flows_stay_bounded() {
    let config = FlowConfig {
        max_flows: 100,
        ..FlowConfig::default()
    };
    let mut p = Pipeline::new(config, ModbusCounters::default());
    for port in 0..5_000u16 {
        let mut f = Frame::to_server(40000, 1);
        f.dport = port;
        f.syn = true;
        feed(&mut p, 0, &f.build(&[]));
    }
    assert!(p.flows().len() <= 100);
    assert_eq!(p.flows().counters().evicted, 4_900);
}

#[test]
fn payload_scan_of_many_ports_is_bounded_and_counted() {
    let config = FlowConfig {
        max_flows: 50,
        ..FlowConfig::default()
    };
    let mut p = Pipeline::new(config, ModbusCounters::default());
    for port in 1000..3000u16 {
        feed(&mut p, 0, &Frame::to_server(port, 1).build(b"hello"));
    }
    assert_eq!(p.flows().len(), 50);
    assert_eq!(p.flows().counters().created, 2000);
    assert_eq!(p.flows().counters().evicted, 1950);
}

#[test]
fn idle_flows_are_closed_and_their_requests_reported_unanswered() {
    let config = FlowConfig {
        idle_timeout: std::time::Duration::from_secs(60),
        ..FlowConfig::default()
    };
    let mut p = Pipeline::new(config, ModbusCounters::default());
    feed(
        &mut p,
        0,
        &Frame::to_server(40000, 1).build(&read_request(1)),
    );
    feed(
        &mut p,
        61_000,
        &Frame::to_server(40001, 1).build(&read_request(1)),
    );
    assert_eq!(p.flows().counters().expired, 1);
    assert_eq!(p.observer().transactions.unanswered, 1);
}

#[test]
fn retransmitted_request_is_one_transaction() {
    let mut p = Pipeline::new(FlowConfig::default(), ModbusCounters::default());
    let request = Frame::to_server(40000, 1).build(&read_request(5));
    feed(&mut p, 0, &request);
    feed(&mut p, 1, &request);
    feed(
        &mut p,
        2,
        &Frame::to_client(40000, 1).build(&read_response(5)),
    );
    p.finish();
    assert_eq!(p.observer().requests.total(), 1);
    assert_eq!(p.observer().retransmissions, 1);
    assert_eq!(answered(&p), 1);
    assert_eq!(p.observer().transactions.unanswered, 0);
}

#[test]
fn modbus_on_a_non_standard_port_is_decoded() {
    let mut p = Pipeline::new(FlowConfig::default(), ModbusCounters::default());
    let mut req = Frame::to_server(40000, 1);
    req.dport = 5020;
    let mut resp = Frame::to_client(40000, 1);
    resp.sport = 5020;
    feed(&mut p, 0, &req.build(&read_request(1)));
    feed(&mut p, 1, &resp.build(&read_response(1)));
    assert_eq!(p.observer().mbap_flows, 1);
    assert_eq!(answered(&p), 1);
}

#[test]
fn modbus_udp_datagrams_are_joined_into_transactions() {
    let udp = |to_server: bool, payload: &[u8]| {
        let (src, dst, sport, dport) = if to_server {
            ([10, 0, 0, 1], [10, 0, 0, 2], 40000, 502)
        } else {
            ([10, 0, 0, 2], [10, 0, 0, 1], 502, 40000)
        };
        let mut out = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, payload)
            .unwrap();
        out
    };
    let mut p = Pipeline::new(FlowConfig::default(), ModbusCounters::default());
    feed(&mut p, 0, &udp(true, &read_request(3)));
    feed(&mut p, 1, &udp(false, &read_response(3)));
    assert_eq!(p.observer().mbap_flows, 1);
    assert_eq!(answered(&p), 1);
}

#[test]
fn a_clock_stepped_back_closes_the_flows_and_time_goes_on_from_the_new_clock() {
    let mut p = Pipeline::new(FlowConfig::default(), ModbusCounters::default());
    let hour = 3_600_000;
    feed(
        &mut p,
        2 * hour,
        &Frame::to_server(40000, 1).build(&read_request(1)),
    );
    // NTP corrects the sensor's clock an hour back: the waiting request's flow closes (the
    // request unanswered), and the connection's next packets open a flow on the new time.
    feed(
        &mut p,
        hour,
        &Frame::to_server(40000, 1).build(&read_request(2)),
    );
    assert_eq!(p.clock_steps(), 1);
    assert_eq!(p.observer().transactions.unanswered, 1);
    assert_eq!(p.flows().counters().created, 2);
    assert_eq!(p.last_ts(), Timestamp::from_nanos(hour * 1_000_000));
    feed(
        &mut p,
        hour + 1,
        &Frame::to_client(40000, 1).build(&read_response(2)),
    );
    assert_eq!(answered(&p), 1);
    // Time then runs on: a tick a little later is no step; one far back from a quiet wire is.
    p.tick(Timestamp::from_nanos((hour + 5_000) * 1_000_000));
    assert_eq!(p.clock_steps(), 1);
    p.tick(Timestamp::from_nanos((hour / 2) * 1_000_000));
    assert_eq!(p.clock_steps(), 2);
    assert_eq!(p.flows().len(), 0);
}

/// Records which flow each frame went to, and the flow of each `Opened` event.
#[derive(Default)]
struct FrameLog {
    frames: Vec<(u64, usize)>,
    opened: Vec<u64>,
}

impl Observer for FrameLog {
    fn flow_event(&mut self, _ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        if matches!(event, FlowEvent::Opened) {
            self.opened.push(flow.id);
        }
    }

    fn frame(&mut self, flow: u64, packet: &CapturedPacket<'_>) {
        self.frames.push((flow, packet.data.len()));
    }
}

#[test]
fn every_frame_of_a_flow_is_reported_with_the_flow_id_of_its_events() {
    let mut p = Pipeline::new(FlowConfig::default(), FrameLog::default());
    let request = Frame::to_server(40000, 1).build(&read_request(1));
    let response = Frame::to_client(40000, 1).build(&read_response(1));
    let other = Frame::to_server(40001, 1).build(&read_request(2));
    // A frame that is not TCP or UDP belongs to no flow.
    let arp = [0xffu8; 42];
    for (i, f) in [&request[..], &response, &other, &arp]
        .into_iter()
        .enumerate()
    {
        p.packet(&CapturedPacket {
            ts: Timestamp::from_nanos(i as u64 * 1_000_000),
            link: LinkType::Ethernet,
            data: f,
            orig_len: f.len() as u32,
        });
    }
    let log = p.observer();
    assert_eq!(log.opened.len(), 2);
    assert_eq!(
        log.frames,
        vec![
            (log.opened[0], request.len()),
            (log.opened[0], response.len()),
            (log.opened[1], other.len()),
        ]
    );
}
