//! One capture worker's side of network-level detection: fills a [`Sample`] per second of
//! capture time from flow events, the Ethernet source of IP traffic and ARP, and hands the
//! seconds it has finished to whoever judges them ([`super::Watch`]).
//!
//! It sits on the packet path, so the common case costs a compare: a request on the same flow
//! as the last one in its slot only bumps a counter (the slot is flushed into the sample when
//! another flow takes it or the second ends). Ethernet sources come from the flow table, once
//! a second per side of a flow.

use std::net::IpAddr;

use super::ArpFrame;
use super::sample::{ClaimKey, Sample, Target, how};
use crate::flow::{CloseReason, FlowEvent, FlowInfo, Protocol};
use crate::mac::Mac;
use crate::session::Event;
use crate::time::Timestamp;

/// Slots of the per-flow request counters (a power of two).
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
    /// The slots of `pending` in use, so closing a second visits only them.
    used: Vec<usize>,
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
            used: Vec::new(),
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
        // The next second is sized like this one: no growing the maps second after second.
        let fresh =
            Sample::with_capacity(next, self.current.targets.len(), self.current.claims.len());
        let done = std::mem::replace(&mut self.current, fresh);
        if !done.targets.is_empty() || !done.claims.is_empty() || done.overflow > 0 {
            self.closed.push(done);
        }
    }

    fn flush_pending(&mut self) {
        for slot in self.used.drain(..) {
            if let Some(p) = self.pending.get_mut(slot).and_then(Option::take) {
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
                if let Some(t) = self.at(ts).target(target(flow), ts, modbus) {
                    t.attempts += 1;
                    t.modbus |= modbus;
                    t.sources.add(client);
                    t.top.add(client, 1);
                }
            }
            FlowEvent::Session(Event::Recognised { .. }) => {
                if let Some(t) = self.at(ts).target(target(flow), ts, true) {
                    t.modbus = true;
                }
            }
            FlowEvent::Closed(CloseReason::Fin)
                if flow.requests == 0 && flow.handshake_seen && flow.protocol == Protocol::Tcp =>
            {
                // Connected and closed in order without a request: it completed.
                let modbus = self.on_modbus_port(flow);
                if let Some(t) = self.at(ts).target(target(flow), ts, modbus) {
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
            && let Some(t) = self.current.target(target(flow), ts, true)
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
        if let Some(entry) = self.pending.get_mut(slot) {
            match entry.replace(fresh) {
                Some(old) => add_requests(&mut self.current, &old),
                None => self.used.push(slot),
            }
        }
    }

    /// IP traffic from `ip` with Ethernet source `mac` (the flow table reports each side of a
    /// flow once a second: a flow is on one worker, so the claims merged are the same whatever
    /// the number of workers).
    #[inline]
    pub fn ip_source(&mut self, ts: Timestamp, vlan: u16, ip: IpAddr, mac: Mac) {
        self.at(ts).claim(ClaimKey { vlan, ip, mac }, ts, how::IP);
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

fn add_requests(sample: &mut Sample, p: &Pending) {
    if let Some(t) = sample.target(p.target, p.ts, true) {
        t.modbus = true;
        t.first = t.first.min(p.first);
        t.requests += p.requests;
        t.sources.add(p.client);
        t.top.add(p.client, p.requests);
    }
}
