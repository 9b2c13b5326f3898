//! The flow table: one entry per TCP connection or UDP conversation, bounded in number and
//! idle time, each holding its reassemblers and its Modbus session.
//!
//! Invariants:
//! - At most [`FlowConfig::max_flows`] flows exist; making room evicts the least recently active
//!   flow (counted), so a scan of a million ports cannot exhaust memory.
//! - A flow idle longer than [`FlowConfig::idle_timeout`] (capture time) is closed.
//! - Segments without payload never create a flow (a SYN scan costs nothing) unless they are a
//!   SYN, whose sender is then known to be the client.
//! - A flow found not to carry Modbus keeps only its key and counters.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hashlink::LruCache;
use otwatch_rules::Direction;
use otwatch_rules::flow::{CloseReason, FlowEvent, FlowInfo, Protocol};
use otwatch_rules::reassembly::{Reassembler, ReassemblyLimits, SegmentFlags, StreamEvent};
use otwatch_rules::session::{Event, Session, SessionHints};
use otwatch_rules::time::Timestamp;
use otwatch_rules::transaction::{Outcome, TrackerConfig};
use rustc_hash::FxBuildHasher;
use serde::Serialize;

use crate::dissect::{Dissected, TcpFlags, Transport};

/// Flow tracking settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowConfig {
    /// Most flows tracked at once.
    pub max_flows: usize,
    /// Capture time after which a silent flow is closed.
    pub idle_timeout: Duration,
    /// Ports where Modbus is expected (a hint for orientation and probing, not a filter).
    pub modbus_ports: Vec<u16>,
    /// Per-direction reassembly bounds.
    pub reassembly: ReassemblyLimits,
    /// Request/response matching bounds.
    pub tracker: TrackerConfig,
    /// Whether to report the Ethernet source of each side of a flow
    /// ([`FlowTable::take_source`]); network-level detection and `learn` want them, and
    /// without them the per-packet check is skipped.
    pub ethernet_sources: bool,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            max_flows: 65_536,
            idle_timeout: Duration::from_secs(300),
            modbus_ports: vec![502],
            reassembly: ReassemblyLimits::default(),
            tracker: TrackerConfig::default(),
            ethernet_sources: true,
        }
    }
}

/// A flow's identity, independent of which side sent a packet.
///
/// Addresses are kept as 128-bit integers (IPv4 mapped into IPv6) so ordering, hashing and
/// comparing a key are a few integer operations on the per-packet path; ports, VLAN and
/// protocol share one word, so a key is 48 bytes and compares in three steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The lower (address, port) end's address.
    low: u128,
    /// The higher end's address.
    high: u128,
    /// The lower end's port, the higher end's port, the VLAN id and the protocol, 16 bits
    /// each.
    rest: u64,
}

impl FlowKey {
    fn of(packet: &Dissected<'_>) -> Self {
        let a = (bits(packet.src), packet.src_port);
        let b = (bits(packet.dst), packet.dst_port);
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let protocol = match protocol(packet.transport) {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
        };
        Self {
            low: low.0,
            high: high.0,
            rest: u64::from(low.1)
                | u64::from(high.1) << 16
                | u64::from(packet.vlan) << 32
                | protocol << 48,
        }
    }

    /// This key's slot in the table of recently seen flows: each address half and the ports
    /// multiplied by their own odd constant (so neighbouring addresses and ports do not cancel
    /// out), then mixed by one more multiplication (Fibonacci hashing).
    fn recent_index(&self) -> usize {
        let mixed = (self.low as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (self.high as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            ^ ((self.low >> 64) as u64 ^ (self.high >> 64) as u64)
                .wrapping_mul(0x1656_67b1_9e37_79f9)
            ^ self.rest.wrapping_mul(0x27d4_eb2f_1656_67c5);
        (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - RECENT.trailing_zeros())) as usize
    }
}

fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

fn protocol(transport: Transport) -> Protocol {
    match transport {
        Transport::Tcp(_) => Protocol::Tcp,
        Transport::Udp => Protocol::Udp,
    }
}

#[derive(Debug)]
struct TcpState {
    streams: [Reassembler; 2],
    fin: [bool; 2],
    opening_syn: Option<u32>,
}

/// One tracked flow.
#[derive(Debug)]
pub struct Flow {
    info: FlowInfo,
    /// `info.client` as first guessed, before the session may have swapped the sides.
    guessed_client: (IpAddr, u16),
    last_seen: Timestamp,
    tcp: Option<TcpState>,
    session: Session,
    /// Per side (the first guess's client, then server): the Ethernet source last reported
    /// and when the next report is due (nanoseconds), so who answers for an address is told
    /// once a second per side rather than per frame.
    sources: [([u8; 6], u64); 2],
}

impl Flow {
    fn new(id: u64, packet: &Dissected<'_>, config: &FlowConfig, now: Timestamp) -> Self {
        let src = (packet.src, packet.src_port);
        let dst = (packet.dst, packet.dst_port);
        let src_modbus = config.modbus_ports.contains(&packet.src_port);
        let dst_modbus = config.modbus_ports.contains(&packet.dst_port);
        // The Modbus port marks the server even against the handshake: crafted traffic sends
        // SYNs from port 502, and a Modbus IDS must read its bytes as responses.
        let (client, server, orientation_known) = match packet.transport {
            _ if dst_modbus && !src_modbus => (src, dst, true),
            _ if src_modbus && !dst_modbus => (dst, src, true),
            Transport::Tcp(f) if f.syn && !f.ack => (src, dst, true),
            Transport::Tcp(f) if f.syn && f.ack => (dst, src, true),
            // Servers listen on the lower port far more often than clients connect from it.
            _ if packet.dst_port <= packet.src_port => (src, dst, false),
            _ => (dst, src, false),
        };
        let hints = SessionHints {
            on_modbus_port: src_modbus || dst_modbus,
            orientation_known,
        };
        let tcp = match packet.transport {
            Transport::Tcp(f) => Some(TcpState {
                streams: [
                    Reassembler::new(config.reassembly),
                    Reassembler::new(config.reassembly),
                ],
                fin: [false, false],
                opening_syn: (f.syn && !f.ack).then_some(f.seq),
            }),
            Transport::Udp => None,
        };
        Self {
            info: FlowInfo {
                id,
                vlan: packet.vlan,
                protocol: protocol(packet.transport),
                client: SocketAddr::new(client.0, client.1),
                server: SocketAddr::new(server.0, server.1),
                encapsulation: None,
                requests: 0,
                first_seen: now,
                last_gap: None,
                first_answer: None,
                last_answer: None,
                answered_requests: 0,
                handshake_seen: matches!(packet.transport, Transport::Tcp(f) if f.syn),
                client_mac: packet.macs.map(|(s, d)| if client == src { s } else { d }),
                server_mac: packet.macs.map(|(s, d)| if client == src { d } else { s }),
            },
            guessed_client: client,
            sources: [([0; 6], 0); 2],
            last_seen: now,
            tcp,
            session: Session::new(hints, config.tracker),
        }
    }

    /// Whether the Ethernet source `mac` of a frame from `from` is due to be reported: it
    /// changed, or a second has passed since it was.
    #[inline]
    fn source_due(&mut self, now: Timestamp, from: (IpAddr, u16), mac: [u8; 6]) -> bool {
        // Ports first: they tell the sides apart in one compare but for a flow between two
        // equal ports.
        let side = usize::from(from.1 != self.guessed_client.1 || from.0 != self.guessed_client.0);
        let Some(entry) = self.sources.get_mut(side) else {
            return false;
        };
        if now.as_nanos() < entry.1 && entry.0 == mac {
            return false;
        }
        *entry = (mac, next_second(now));
        true
    }

    /// What observers are told about this flow.
    pub fn info(&self) -> &FlowInfo {
        &self.info
    }

    fn direction_of(&self, packet: &Dissected<'_>) -> Direction {
        if (packet.src, packet.src_port) == self.guessed_client {
            Direction::ToServer
        } else {
            Direction::ToClient
        }
    }

    /// Processes one packet of this flow. Returns why the flow ended, if it did.
    fn packet(
        &mut self,
        now: Timestamp,
        packet: &Dissected<'_>,
        emit: &mut impl FnMut(&FlowInfo, FlowEvent<'_>),
    ) -> Option<CloseReason> {
        self.last_seen = now;
        let direction = self.direction_of(packet);
        let closed = match packet.transport {
            Transport::Tcp(flags) => self.tcp_segment(now, direction, flags, packet.payload, emit),
            Transport::Udp => {
                let Self { session, info, .. } = self;
                session.datagram(now, direction, packet.payload, &mut |e| {
                    session_event(info, e, emit)
                });
                None
            }
        };
        let Self { session, info, .. } = self;
        session.expire(now, &mut |e| session_event(info, e, emit));
        if session.is_not_modbus()
            && let Some(tcp) = self.tcp.as_mut()
        {
            // Keep only what end-of-connection tracking needs.
            tcp.streams = [Reassembler::default(), Reassembler::default()];
        }
        closed
    }

    fn tcp_segment(
        &mut self,
        now: Timestamp,
        direction: Direction,
        flags: TcpFlags,
        payload: &[u8],
        emit: &mut impl FnMut(&FlowInfo, FlowEvent<'_>),
    ) -> Option<CloseReason> {
        let Self {
            session, info, tcp, ..
        } = self;
        let tcp = tcp.as_mut()?;
        let i = index(direction);
        if session.is_not_modbus() {
            // Only the connection's end matters now.
            if flags.rst {
                self.reset(direction, emit);
                return Some(CloseReason::Reset);
            }
            return fin_seen(&mut tcp.fin, i, flags.fin);
        }
        let TcpState { streams, fin, .. } = tcp;
        let [to_server, to_client] = streams;
        let (this, other) = match direction {
            Direction::ToServer => (to_server, to_client),
            Direction::ToClient => (to_client, to_server),
        };
        let segment_flags = SegmentFlags {
            syn: flags.syn,
            fin: flags.fin,
        };
        this.segment(flags.seq, segment_flags, payload, &mut |event| {
            stream_event(session, info, now, direction, event, emit)
        });
        if flags.ack {
            other.acknowledged(flags.ack_number, &mut |event| {
                stream_event(session, info, now, direction.reverse(), event, emit)
            });
        }
        if flags.rst {
            self.reset(direction, emit);
            return Some(CloseReason::Reset);
        }
        fin_seen(fin, i, flags.fin)
    }

    /// Whether a segment travelling `direction` comes from the server. `direction` is
    /// relative to the first guess of the client, which the session may have swapped since.
    fn sent_by_server(&self, direction: Direction) -> bool {
        let swapped = (self.info.client.ip(), self.info.client.port()) != self.guessed_client;
        (direction == Direction::ToClient) != swapped
    }

    /// Reports an RST and its sender ([`FlowEvent::Reset`]): whether a device drops its
    /// connections.
    #[cold]
    #[inline(never)]
    fn reset(&mut self, direction: Direction, emit: &mut impl FnMut(&FlowInfo, FlowEvent<'_>)) {
        let by_server = self.sent_by_server(direction);
        emit(&self.info, FlowEvent::Reset { by_server });
    }

    /// A SYN-ACK on this flow: from the server, it says the device takes connections
    /// ([`FlowEvent::Accepted`]).
    #[cold]
    #[inline(never)]
    fn syn_ack(&mut self, packet: &Dissected<'_>, emit: &mut impl FnMut(&FlowInfo, FlowEvent<'_>)) {
        if self.sent_by_server(self.direction_of(packet)) {
            emit(&self.info, FlowEvent::Accepted);
        }
    }

    /// Ends the flow: buffered stream data is flushed, waiting requests are reported.
    fn close(
        &mut self,
        now: Timestamp,
        reason: CloseReason,
        emit: &mut impl FnMut(&FlowInfo, FlowEvent<'_>),
    ) {
        let Self {
            session, info, tcp, ..
        } = self;
        if let Some(tcp) = tcp.as_mut()
            && !session.is_not_modbus()
        {
            for (i, stream) in tcp.streams.iter_mut().enumerate() {
                let direction = if i == 0 {
                    Direction::ToServer
                } else {
                    Direction::ToClient
                };
                stream.flush(&mut |event| stream_event(session, info, now, direction, event, emit));
            }
        }
        session.close(now, &mut |e| session_event(info, e, emit));
        emit(info, FlowEvent::Closed(reason));
    }
}

/// Records a FIN from side `i`; the connection is over once both sides sent one. Written so a
/// segment without FIN does not store and reload the flags (a store-forwarding stall that cost
/// a tenth of the per-packet time).
fn fin_seen(fin: &mut [bool; 2], i: usize, fin_flag: bool) -> Option<CloseReason> {
    if !fin_flag {
        return None;
    }
    if let Some(side) = fin.get_mut(i) {
        *side = true;
    }
    (fin[0] && fin[1]).then_some(CloseReason::Fin)
}

/// Passes a session event on, first updating the flow's view with what the session learned.
fn session_event(
    info: &mut FlowInfo,
    event: Event<'_>,
    emit: &mut impl FnMut(&FlowInfo, FlowEvent<'_>),
) {
    match event {
        Event::Recognised {
            encapsulation,
            reversed,
        } => {
            info.encapsulation = Some(encapsulation);
            if reversed {
                std::mem::swap(&mut info.client, &mut info.server);
                std::mem::swap(&mut info.client_mac, &mut info.server_mac);
            }
        }
        Event::Request { unit_id, .. } => {
            info.requests += 1;
            // A broadcast expects no answer: it never waits for one.
            if !info.expects_answer(unit_id) {
                info.answered_requests += 1;
            }
        }
        Event::Transaction(t) if t.outcome != Outcome::Unanswered => {
            if info.first_answer.is_none() {
                info.first_answer = t.response_ts;
            }
            info.last_answer = t.response_ts;
            info.answered_requests = info.requests;
        }
        _ => {}
    }
    emit(info, FlowEvent::Session(&event));
}

fn stream_event(
    session: &mut Session,
    info: &mut FlowInfo,
    now: Timestamp,
    direction: Direction,
    event: StreamEvent<'_>,
    emit: &mut impl FnMut(&FlowInfo, FlowEvent<'_>),
) {
    match event {
        StreamEvent::Data(bytes) => {
            session.stream(now, direction, bytes, &mut |e| session_event(info, e, emit));
        }
        StreamEvent::Gap { bytes } => {
            info.last_gap = Some(now);
            emit(info, FlowEvent::Gap { direction, bytes });
            session.gap(direction, &mut |e| session_event(info, e, emit));
        }
        StreamEvent::Retransmission { bytes } => {
            emit(info, FlowEvent::Retransmission { direction, bytes });
        }
        StreamEvent::OverlapConflict { bytes } => {
            emit(info, FlowEvent::OverlapConflict { direction, bytes });
        }
    }
}

fn index(direction: Direction) -> usize {
    match direction {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

/// Counters the flow table keeps about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlowCounters {
    /// Flows created.
    pub created: u64,
    /// Flows evicted to make room.
    pub evicted: u64,
    /// Flows closed for idleness.
    pub expired: u64,
    /// Most flows tracked at once.
    pub peak: u64,
}

/// Slots of the table of recently seen flows (a power of two).
const RECENT: usize = 256;

/// Where a flow sits in the LRU order: its slot, and the capture time at which it was last
/// moved to the back of the order.
#[derive(Debug, Clone, Copy)]
struct Place {
    slot: usize,
    touched: Timestamp,
}

/// All tracked flows.
///
/// Flows live in slots; an LRU map from key to slot orders them by activity. Most packets find
/// their flow without hashing into the map or moving the flow in the order: the previous
/// packet's flow is remembered (the three packets of an exchange need no lookup at all), and
/// a small direct-mapped table holds recently seen flows. Skipping the map leaves the order
/// stale: it is brought up to date lazily, when idle flows are swept or one is evicted, by
/// moving to the back every flow found to have been active since it was last placed (each
/// flow at most once per such move, so the work is bounded by the packets that skipped the
/// map).
pub struct FlowTable {
    config: FlowConfig,
    slots: Vec<Option<Flow>>,
    free: Vec<usize>,
    order: LruCache<FlowKey, Place, FxBuildHasher>,
    recent: Vec<Option<(FlowKey, usize)>>,
    last: Option<(FlowKey, usize)>,
    next_id: u64,
    last_sweep: Timestamp,
    counters: FlowCounters,
    /// The Ethernet source of the last packet, when due to be reported (VLAN, address, MAC).
    source: Option<(u16, IpAddr, [u8; 6])>,
}

impl FlowTable {
    /// An empty table.
    pub fn new(config: FlowConfig) -> Self {
        let capacity = config.max_flows.max(1);
        Self {
            order: LruCache::with_hasher(capacity.saturating_add(1), FxBuildHasher),
            slots: Vec::new(),
            free: Vec::new(),
            recent: vec![None; RECENT],
            last: None,
            config,
            next_id: 0,
            last_sweep: Timestamp::default(),
            counters: FlowCounters::default(),
            source: None,
        }
    }

    /// Flows tracked now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The Ethernet source of the packet just routed, when it is due to be reported (a side
    /// of a flow reports its source when it changes and once a second): `(vlan, address,
    /// MAC)`.
    #[inline]
    pub fn take_source(&mut self) -> Option<(u16, IpAddr, [u8; 6])> {
        self.source.take()
    }

    /// The table's counters.
    pub fn counters(&self) -> FlowCounters {
        self.counters
    }

    /// Routes one packet to its flow, creating, closing and evicting flows as needed; returns
    /// the flow's id, or none when the packet belongs to no flow (it would not open one).
    pub fn packet(
        &mut self,
        now: Timestamp,
        packet: &Dissected<'_>,
        emit: &mut impl FnMut(&FlowInfo, FlowEvent<'_>),
    ) -> Option<u64> {
        if now.since(self.last_sweep) >= Duration::from_secs(1) {
            self.sweep(now, emit);
        }
        let key = FlowKey::of(packet);
        let (syn, syn_ack) = match packet.transport {
            Transport::Tcp(f) if f.syn => (!f.ack, f.ack),
            _ => (false, false),
        };
        if let Some(slot) = self.lookup(&key, now)
            && let Some(flow) = self.slots.get_mut(slot).and_then(Option::as_mut)
        {
            if syn_ack {
                flow.syn_ack(packet, emit);
            }
            // A SYN with a new initial sequence number opens a new connection on the same ports.
            let reused = syn
                && flow
                    .tcp
                    .as_ref()
                    .is_some_and(|t| t.opening_syn != Some(packet_seq(packet)));
            if !reused {
                if self.config.ethernet_sources {
                    note_source(&mut self.source, flow, now, packet);
                }
                let id = flow.info.id;
                if let Some(reason) = flow.packet(now, packet, emit) {
                    flow.close(now, reason, emit);
                    self.remove(&key);
                }
                return Some(id);
            }
            flow.close(now, CloseReason::Reused, emit);
            self.remove(&key);
        }
        let creates =
            !packet.payload.is_empty() || matches!(packet.transport, Transport::Tcp(f) if f.syn);
        if !creates {
            return None;
        }
        if self.order.len() >= self.config.max_flows.max(1)
            && let Some(mut evicted) = self.remove_lru()
        {
            self.counters.evicted += 1;
            evicted.close(now, CloseReason::Evicted, emit);
        }
        self.next_id += 1;
        let mut flow = Flow::new(self.next_id, packet, &self.config, now);
        self.counters.created += 1;
        emit(&flow.info, FlowEvent::Opened);
        if syn_ack {
            // Picked up at the server's answer to a SYN the capture missed.
            flow.syn_ack(packet, emit);
        }
        if self.config.ethernet_sources {
            note_source(&mut self.source, &mut flow, now, packet);
        }
        let id = flow.info.id;
        match flow.packet(now, packet, emit) {
            Some(reason) => flow.close(now, reason, emit),
            None => self.insert(key, flow, now),
        }
        self.counters.peak = self.counters.peak.max(self.order.len() as u64);
        Some(id)
    }

    /// Closes flows idle for longer than the idle timeout.
    pub fn sweep(&mut self, now: Timestamp, emit: &mut impl FnMut(&FlowInfo, FlowEvent<'_>)) {
        self.last_sweep = now;
        let deadline = now.saturating_sub(self.config.idle_timeout);
        while let Some(last_seen) = self.least_recent()
            && last_seen.is_none_or(|seen| seen < deadline)
        {
            if let Some(mut flow) = self.pop_front() {
                self.counters.expired += 1;
                flow.close(now, CloseReason::Idle, emit);
            }
        }
    }

    /// When the least recently active flow was last seen (`Some(None)` for a slot found empty,
    /// which is removed like an idle flow), after moving to the back of the order every flow
    /// at its front that was active since it was placed there. `None` when no flow is tracked.
    fn least_recent(&mut self) -> Option<Option<Timestamp>> {
        loop {
            let (&key, &place) = self.order.iter().next()?;
            let seen = self
                .slots
                .get(place.slot)
                .and_then(Option::as_ref)
                .map(|flow| flow.last_seen);
            match seen {
                Some(seen) if seen > place.touched => {
                    if let Some(p) = self.order.get_mut(&key) {
                        p.touched = seen;
                    }
                }
                _ => return Some(seen),
            }
        }
    }

    /// Capture time went back from `before` to `now` (a corrected clock): closes every flow at
    /// `before`, its own time, and sweeps from `now` on.
    pub fn restart_clock(
        &mut self,
        before: Timestamp,
        now: Timestamp,
        emit: &mut impl FnMut(&FlowInfo, FlowEvent<'_>),
    ) {
        self.close_every(before, CloseReason::ClockStep, emit);
        self.last_sweep = now;
    }

    /// Closes every flow (end of capture or shutdown).
    pub fn close_all(&mut self, now: Timestamp, emit: &mut impl FnMut(&FlowInfo, FlowEvent<'_>)) {
        self.close_every(now, CloseReason::End, emit);
    }

    fn close_every(
        &mut self,
        at: Timestamp,
        reason: CloseReason,
        emit: &mut impl FnMut(&FlowInfo, FlowEvent<'_>),
    ) {
        while let Some(mut flow) = self.remove_lru() {
            flow.close(at, reason, emit);
        }
    }

    /// The slot of `key`'s flow.
    fn lookup(&mut self, key: &FlowKey, now: Timestamp) -> Option<usize> {
        if let Some((last, slot)) = self.last
            && last == *key
        {
            return Some(slot);
        }
        let recent = key.recent_index();
        let slot = match self.recent.get(recent) {
            Some(Some((k, slot))) if k == key => *slot,
            _ => {
                let place = self.order.get_mut(key)?;
                place.touched = now;
                let slot = place.slot;
                if let Some(r) = self.recent.get_mut(recent) {
                    *r = Some((*key, slot));
                }
                slot
            }
        };
        self.last = Some((*key, slot));
        Some(slot)
    }

    fn insert(&mut self, key: FlowKey, flow: Flow, now: Timestamp) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        if let Some(entry) = self.slots.get_mut(slot) {
            *entry = Some(flow);
        }
        self.order.insert(key, Place { slot, touched: now });
        if let Some(r) = self.recent.get_mut(key.recent_index()) {
            *r = Some((key, slot));
        }
        self.last = Some((key, slot));
    }

    fn remove(&mut self, key: &FlowKey) -> Option<Flow> {
        let place = self.order.remove(key)?;
        self.release(key, place.slot)
    }

    /// Removes the least recently active flow.
    fn remove_lru(&mut self) -> Option<Flow> {
        self.least_recent()?;
        self.pop_front()
    }

    /// Removes the flow at the front of the order, which [`Self::least_recent`] has just
    /// brought up to date.
    fn pop_front(&mut self) -> Option<Flow> {
        let (key, place) = self.order.remove_lru()?;
        self.release(&key, place.slot)
    }

    fn release(&mut self, key: &FlowKey, slot: usize) -> Option<Flow> {
        if self.last.is_some_and(|(last, _)| last == *key) {
            self.last = None;
        }
        if let Some(r) = self.recent.get_mut(key.recent_index())
            && r.is_some_and(|(k, _)| k == *key)
        {
            *r = None;
        }
        self.free.push(slot);
        self.slots.get_mut(slot).and_then(Option::take)
    }
}

/// Keeps the Ethernet source of `packet` in `source` when `flow` is due to report it (see
/// [`FlowTable::take_source`]).
#[inline]
fn note_source(
    source: &mut Option<(u16, IpAddr, [u8; 6])>,
    flow: &mut Flow,
    now: Timestamp,
    packet: &Dissected<'_>,
) {
    if let Some((src, _)) = packet.macs
        && flow.source_due(now, (packet.src, packet.src_port), src)
    {
        *source = Some((packet.vlan, packet.src, src));
    }
}

/// The start of the second after `now`, in nanoseconds.
#[cold]
fn next_second(now: Timestamp) -> u64 {
    (now.as_nanos() / 1_000_000_000 + 1).saturating_mul(1_000_000_000)
}

fn packet_seq(packet: &Dissected<'_>) -> u32 {
    match packet.transport {
        Transport::Tcp(f) => f.seq,
        Transport::Udp => 0,
    }
}

#[cfg(test)]
mod tests;
