//! The packet path: dissect, defragment, route to the flow table, and hand every event to an
//! [`Observer`]. One pipeline serves replay and live capture alike.

use std::collections::BTreeMap;

use otwatch_rules::time::Timestamp;
use serde::Serialize;

use crate::capture::CapturedPacket;
use crate::defrag::{Defragmenter, Reassembly};
use crate::dissect::{self, Dissection};
use crate::flow::{FlowConfig, FlowTable};
use otwatch_rules::flow::{FlowEvent, FlowInfo};

/// Whatever wants to know what the pipeline saw: counters, transaction logs, detectors.
pub trait Observer {
    /// One event of one flow, at capture time `ts`.
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>);

    /// Capture time has reached `now` with no packet to say so (a quiet live capture): close
    /// what is due (fold windows, periodic reports).
    fn tick(&mut self, _now: Timestamp) {}

    /// The capture ended and every flow is closed: report what is still held back.
    fn finish(&mut self) {}
}

impl<A: Observer, B: Observer> Observer for (A, B) {
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        self.0.flow_event(ts, flow, event);
        self.1.flow_event(ts, flow, event);
    }

    fn tick(&mut self, now: Timestamp) {
        self.0.tick(now);
        self.1.tick(now);
    }

    fn finish(&mut self) {
        self.0.finish();
        self.1.finish();
    }
}

impl<T: Observer> Observer for Option<T> {
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        if let Some(inner) = self {
            inner.flow_event(ts, flow, event);
        }
    }

    fn tick(&mut self, now: Timestamp) {
        if let Some(inner) = self {
            inner.tick(now);
        }
    }

    fn finish(&mut self) {
        if let Some(inner) = self {
            inner.finish();
        }
    }
}

impl<T: Observer + ?Sized> Observer for &mut T {
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        (**self).flow_event(ts, flow, event);
    }

    fn tick(&mut self, now: Timestamp) {
        (**self).tick(now);
    }

    fn finish(&mut self) {
        (**self).finish();
    }
}

/// Packet-level counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PacketCounters {
    /// Packets seen.
    pub packets: u64,
    /// Bytes captured.
    pub bytes: u64,
    /// Packets the capture cut short (snap length).
    pub truncated: u64,
    /// IPv4 fragments seen.
    pub fragments: u64,
    /// Datagrams rebuilt from fragments.
    pub reassembled: u64,
    /// Fragmented datagrams given up because fragments contradicted each other.
    pub fragments_invalid: u64,
    /// Fragmented datagrams given up for lack of room or time.
    pub fragments_expired: u64,
    /// Packets of no interest, by reason.
    pub ignored: BTreeMap<&'static str, u64>,
    /// Packets whose headers do not parse, by reason.
    pub malformed: BTreeMap<&'static str, u64>,
}

impl PacketCounters {
    /// Adds another pipeline's counters (another worker's).
    pub fn merge(&mut self, other: &PacketCounters) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.truncated += other.truncated;
        self.fragments += other.fragments;
        self.reassembled += other.reassembled;
        self.fragments_invalid += other.fragments_invalid;
        self.fragments_expired += other.fragments_expired;
        for (k, n) in &other.ignored {
            *self.ignored.entry(k).or_default() += n;
        }
        for (k, n) in &other.malformed {
            *self.malformed.entry(k).or_default() += n;
        }
    }
}

/// Dissection, flow tracking and session decoding for a stream of packets.
pub struct Pipeline<O> {
    flows: FlowTable,
    defrag: Defragmenter,
    counters: PacketCounters,
    last_ts: Timestamp,
    observer: O,
}

impl<O: Observer> Pipeline<O> {
    /// A pipeline reporting to `observer`.
    pub fn new(config: FlowConfig, observer: O) -> Self {
        Self {
            flows: FlowTable::new(config),
            defrag: Defragmenter::default(),
            counters: PacketCounters::default(),
            last_ts: Timestamp::default(),
            observer,
        }
    }

    /// Processes one captured packet.
    pub fn packet(&mut self, packet: &CapturedPacket<'_>) {
        let now = packet.ts;
        self.last_ts = self.last_ts.max(now);
        self.counters.packets += 1;
        self.counters.bytes += packet.data.len() as u64;
        if packet.truncated() {
            self.counters.truncated += 1;
        }
        let observer = &mut self.observer;
        let mut emit = |info: &FlowInfo, event: FlowEvent<'_>| {
            observer.flow_event(now, info, &event);
        };
        match dissect::dissect(packet) {
            Dissection::Packet(p) => self.flows.packet(now, &p, &mut emit),
            Dissection::Fragment(fragment) => {
                self.counters.fragments += 1;
                match self.defrag.add(now, &fragment) {
                    Reassembly::Incomplete => {}
                    Reassembly::Invalid => self.counters.fragments_invalid += 1,
                    Reassembly::Complete(datagram) => {
                        self.counters.reassembled += 1;
                        match dissect::reassembled(&fragment, &datagram) {
                            Dissection::Packet(p) => self.flows.packet(now, &p, &mut emit),
                            Dissection::Ignored(why) => {
                                *self.counters.ignored.entry(why).or_default() += 1
                            }
                            Dissection::Malformed(why) => {
                                *self.counters.malformed.entry(why).or_default() += 1
                            }
                            Dissection::Fragment(_) => {
                                *self
                                    .counters
                                    .malformed
                                    .entry("nested_fragment")
                                    .or_default() += 1
                            }
                        }
                    }
                }
                self.counters.fragments_expired = self.defrag.dropped;
            }
            Dissection::Ignored(why) => *self.counters.ignored.entry(why).or_default() += 1,
            Dissection::Malformed(why) => *self.counters.malformed.entry(why).or_default() += 1,
        }
    }

    /// Advances capture time to `now` without a packet (a live capture gone quiet): closes
    /// idle flows and lets the observer close what is due. Time never goes backwards.
    pub fn tick(&mut self, now: Timestamp) {
        if now <= self.last_ts {
            return;
        }
        self.last_ts = now;
        let observer = &mut self.observer;
        self.flows
            .sweep(now, &mut |info: &FlowInfo, event: FlowEvent<'_>| {
                observer.flow_event(now, info, &event)
            });
        self.observer.tick(now);
    }

    /// The latest capture time seen (packet or tick).
    pub fn last_ts(&self) -> Timestamp {
        self.last_ts
    }

    /// Closes every flow (flushing streams, reporting waiting requests as unanswered), then lets
    /// the observer report what it still holds.
    pub fn finish(&mut self) {
        let now = self.last_ts;
        let observer = &mut self.observer;
        self.flows
            .close_all(now, &mut |info: &FlowInfo, event: FlowEvent<'_>| {
                observer.flow_event(now, info, &event)
            });
        self.observer.finish();
    }

    /// Packet-level counters so far.
    pub fn counters(&self) -> &PacketCounters {
        &self.counters
    }

    /// The flow table.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The observer.
    pub fn observer(&self) -> &O {
        &self.observer
    }

    /// The observer, mutably.
    pub fn observer_mut(&mut self) -> &mut O {
        &mut self.observer
    }

    /// Gives the observer back.
    pub fn into_observer(self) -> O {
        self.observer
    }
}

#[cfg(test)]
mod tests;
