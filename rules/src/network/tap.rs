//! One capture worker's side of network-level detection: fills a [`Sample`] per second of
//! capture time from flow events, the Ethernet source of IP traffic and ARP, and hands the
//! seconds it has finished to whoever judges them ([`super::Watch`]).
//!
//! It sits on the packet path, so the common cases cost a compare: a request on the same flow
//! as the last one in its slot only bumps a counter (the slot is flushed into the sample when
//! another flow takes it or the second ends), and an address seen again from the same Ethernet
//! address in the same second is skipped.

use std::net::IpAddr;

use super::ArpFrame;
use super::sample::{ClaimKey, Sample, Target, how};
use crate::flow::{CloseReason, FlowEvent, FlowInfo, Protocol};
use crate::mac::Mac;
use crate::session::Event;
use crate::time::Timestamp;

/// Slots of the per-flow request counters and of the claim cache (a power of two).
const SLOTS: usize = 1_024;

/// Requests of one flow not yet added to the sample.
#[derive(Debug, Clone, Copy)]
struct Pending {
    flow: u64,
    target: Target,
    client: IpAddr,
    requests: u64,
    first: Timestamp,
    ts: Timestamp,
}

/// An address last seen from an Ethernet address: VLAN, address, Ethernet address, second.
type Recent = (u16, IpAddr, Mac, u64);

/// One worker's sampler.
#[derive(Debug)]
pub struct Tap {
    modbus_ports: Vec<u16>,
    current: Sample,
    /// Whether `current` has seen anything (the first event sets its second).
    started: bool,
    /// Where `current`'s second ends, in nanoseconds (0 before the first event).
    end: u64,
    closed: Vec<Sample>,
    pending: Box<[Option<Pending>]>,
    recent: Box<[Option<Recent>]>,
}

impl Tap {
    /// A sampler; servers on `modbus_ports` count as Modbus servers before any request shows
    /// it.
    pub fn new(modbus_ports: &[u16]) -> Self {
        Self {
            modbus_ports: modbus_ports.to_vec(),
            current: Sample::default(),
            started: false,
            end: 0,
            closed: Vec::new(),
            pending: vec![None; SLOTS].into_boxed_slice(),
            recent: vec![None; SLOTS].into_boxed_slice(),
        }
    }

    /// The sample of `ts`'s second, closing the current one if `ts` is in a later second.
    #[inline]
    fn at(&mut self, ts: Timestamp) -> &mut Sample {
        // A compare on the packet path; the division only when the second changes.
        if ts.as_nanos() >= self.end {
            self.roll(ts);
        }
        &mut self.current
    }

    #[cold]
    #[inline(never)]
    fn roll(&mut self, ts: Timestamp) {
        let second = ts.as_nanos() / 1_000_000_000;
        if !self.started {
            self.started = true;
            self.current.second = second;
        } else if second > self.current.second {
            self.close(second);
        }
        self.end = self
            .current
            .second
            .saturating_add(1)
            .saturating_mul(1_000_000_000);
    }

    /// Closes the current second (if anything happened in it) and starts `next`.
    fn close(&mut self, next: u64) {
        self.flush_pending();
        let done = std::mem::replace(&mut self.current, Sample::new(next));
        if !done.targets.is_empty() || !done.claims.is_empty() || done.overflow > 0 {
            self.closed.push(done);
        }
    }

    fn flush_pending(&mut self) {
        for slot in self.pending.iter_mut() {
            if let Some(p) = slot.take() {
                add_requests(&mut self.current, &p);
            }
        }
    }

    /// Every second before this one is complete: what [`Tap::take`] has not returned yet
    /// will not change.
    pub fn watermark(&self) -> u64 {
        self.current.second
    }

    /// The seconds finished since the last call, oldest first.
    pub fn take(&mut self) -> Vec<Sample> {
        std::mem::take(&mut self.closed)
    }

    /// Capture time reached `now` without an event: the seconds before it are complete.
    pub fn tick(&mut self, now: Timestamp) {
        self.at(now);
    }

    /// The capture ended (or its clock stepped): closes the current second.
    pub fn finish(&mut self) {
        if self.started {
            let next = self.current.second.saturating_add(1);
            self.close(next);
            self.started = false;
            self.end = 0;
        }
    }

    /// One flow event.
    #[inline]
    pub fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        match event {
            FlowEvent::Session(Event::Request { .. }) => self.request(ts, flow),
            FlowEvent::Opened if flow.protocol == Protocol::Tcp && flow.handshake_seen => {
                let client = flow.client.ip();
                let modbus = self.on_modbus_port(flow);
                if let Some(t) = self.at(ts).target(target(flow), ts) {
                    t.attempts += 1;
                    t.modbus |= modbus;
                    t.sources.add(client);
                    t.top.add(client, 1);
                }
            }
            FlowEvent::Session(Event::Recognised { .. }) => {
                if let Some(t) = self.at(ts).target(target(flow), ts) {
                    t.modbus = true;
                }
            }
            FlowEvent::Closed(CloseReason::Fin)
                if flow.requests == 0 && flow.handshake_seen && flow.protocol == Protocol::Tcp =>
            {
                // Connected and closed in order without a request: it completed.
                if let Some(t) = self.at(ts).target(target(flow), ts) {
                    t.completed += 1;
                }
            }
            _ => {}
        }
    }

    #[inline]
    fn on_modbus_port(&self, flow: &FlowInfo) -> bool {
        self.modbus_ports.contains(&flow.server.port())
    }

    /// A request on `flow` (what [`Tap::flow_event`] does with one, for callers that
    /// tell events apart themselves): counted in the flow's slot, added to the sample later.
    #[inline]
    pub fn request(&mut self, ts: Timestamp, flow: &FlowInfo) {
        self.at(ts);
        let slot = (flow.id as usize) & (SLOTS - 1);
        if let Some(Some(p)) = self.pending.get_mut(slot)
            && p.flow == flow.id
        {
            p.requests += 1;
            p.ts = ts;
            return;
        }
        self.request_slow(ts, flow, slot);
    }

    #[cold]
    #[inline(never)]
    fn request_slow(&mut self, ts: Timestamp, flow: &FlowInfo, slot: usize) {
        if flow.requests == 1
            && flow.handshake_seen
            && let Some(t) = self.current.target(target(flow), ts)
        {
            // The first request on a connection opened with a handshake: it completed.
            t.completed += 1;
        }
        let fresh = Pending {
            flow: flow.id,
            target: target(flow),
            client: flow.client.ip(),
            requests: 1,
            first: ts,
            ts,
        };
        if let Some(entry) = self.pending.get_mut(slot)
            && let Some(old) = entry.replace(fresh)
        {
            add_requests(&mut self.current, &old);
        }
    }

    /// A frame of IP traffic from `ip` with Ethernet source `mac`.
    #[inline]
    pub fn ip_source(&mut self, ts: Timestamp, vlan: u16, ip: IpAddr, mac: Mac) {
        let slot = slot_of(ip);
        let n = ts.as_nanos();
        // Within the current second (an older frame, jitter, always records its time).
        if n < self.end
            && n >= self.end.saturating_sub(1_000_000_000)
            && let Some(Some(r)) = self.recent.get(slot)
            && *r == (vlan, ip, mac, self.current.second)
        {
            return;
        }
        self.claim_slow(ts, ClaimKey { vlan, ip, mac }, how::IP, slot);
    }

    #[cold]
    #[inline(never)]
    fn claim_slow(&mut self, ts: Timestamp, key: ClaimKey, how: u8, slot: usize) {
        let sample = self.at(ts);
        sample.claim(key, ts, how);
        let second = sample.second;
        if let Some(r) = self.recent.get_mut(slot) {
            *r = Some((key.vlan, key.ip, key.mac, second));
        }
    }

    /// An ARP packet: its sender claims its address.
    pub fn arp(&mut self, ts: Timestamp, frame: &ArpFrame) {
        let how = if frame.announces() {
            how::ARP | how::ANNOUNCED
        } else {
            how::ARP
        };
        let key = ClaimKey {
            vlan: frame.vlan,
            ip: IpAddr::V4(frame.sender_ip),
            mac: frame.sender_mac,
        };
        self.at(ts).claim(key, ts, how);
    }
}

fn target(flow: &FlowInfo) -> Target {
    Target {
        vlan: flow.vlan,
        ip: flow.server.ip(),
        port: flow.server.port(),
    }
}

fn slot_of(ip: IpAddr) -> usize {
    let bits = match ip {
        IpAddr::V4(v4) => u64::from(v4.to_bits()),
        IpAddr::V6(v6) => {
            let b = v6.to_bits();
            (b as u64) ^ ((b >> 64) as u64)
        }
    };
    (bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize & (SLOTS - 1)
}

fn add_requests(sample: &mut Sample, p: &Pending) {
    if let Some(t) = sample.target(p.target, p.ts) {
        t.modbus = true;
        t.first = t.first.min(p.first);
        t.requests += p.requests;
        t.sources.add(p.client);
        t.top.add(p.client, p.requests);
    }
}
