//! The packet path: dissect, defragment, route to the flow table, and hand every event to an
//! [`Observer`]. One pipeline serves replay and live capture alike.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use otwatch_rules::mac::Mac;
use otwatch_rules::network::ArpFrame;
use otwatch_rules::time::Timestamp;
use serde::Serialize;

use crate::defrag::{Defragmenter, Reassembly};
use crate::dissect::{self, Dissection};
use crate::flow_table::{FlowConfig, FlowTable};
use crate::frame::CapturedPacket;
use otwatch_rules::flow::{FlowEvent, FlowInfo};

/// Whatever wants to know what the pipeline saw: counters, transaction logs, detectors.
pub trait Observer {
    /// One event of one flow, at capture time `ts`.
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>);

    /// The frame just handled went to flow `flow` (after the events it caused): for observers
    /// that keep a flow's frames, such as the evidence behind alerts. A frame that completed a
    /// fragmented datagram is reported, its earlier fragments are not.
    #[inline]
    fn frame(&mut self, _flow: u64, _packet: &CapturedPacket<'_>) {}

    /// An ARP packet, at capture time `ts`.
    #[inline]
    fn arp(&mut self, _ts: Timestamp, _frame: &ArpFrame) {}

    /// IP traffic from `ip` with Ethernet source `mac`, at capture time `ts` (after the
    /// frame's flow events): who answers for which address. Each side of a flow reports its
    /// source when it changes and at most once a second otherwise.
    #[inline]
    fn ip_source(&mut self, _ts: Timestamp, _vlan: u16, _ip: IpAddr, _mac: Mac) {}

    /// Capture time has reached `now` with no packet to say so (a quiet live capture): close
    /// what is due (fold windows, periodic reports).
    fn tick(&mut self, _now: Timestamp) {}

    /// The capture ended and every flow is closed: report what is still held back.
    fn finish(&mut self) {}

    /// Capture time stepped back from `before` to `now` (the capture's clock was corrected)
    /// and every flow was closed: restart what counts in time windows, report what they held.
    fn clock_stepped(&mut self, _before: Timestamp, _now: Timestamp) {}
}

impl<T: Observer> Observer for Option<T> {
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        if let Some(inner) = self {
            inner.flow_event(ts, flow, event);
        }
    }

    fn frame(&mut self, flow: u64, packet: &CapturedPacket<'_>) {
        if let Some(inner) = self {
            inner.frame(flow, packet);
        }
    }

    fn arp(&mut self, ts: Timestamp, frame: &ArpFrame) {
        if let Some(inner) = self {
            inner.arp(ts, frame);
        }
    }

    #[inline]
    fn ip_source(&mut self, ts: Timestamp, vlan: u16, ip: IpAddr, mac: Mac) {
        if let Some(inner) = self {
            inner.ip_source(ts, vlan, ip, mac);
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

    fn clock_stepped(&mut self, before: Timestamp, now: Timestamp) {
        if let Some(inner) = self {
            inner.clock_stepped(before, now);
        }
    }
}

impl<T: Observer + ?Sized> Observer for &mut T {
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        (**self).flow_event(ts, flow, event);
    }

    fn frame(&mut self, flow: u64, packet: &CapturedPacket<'_>) {
        (**self).frame(flow, packet);
    }

    fn arp(&mut self, ts: Timestamp, frame: &ArpFrame) {
        (**self).arp(ts, frame);
    }

    #[inline]
    fn ip_source(&mut self, ts: Timestamp, vlan: u16, ip: IpAddr, mac: Mac) {
        (**self).ip_source(ts, vlan, ip, mac);
    }

    fn tick(&mut self, now: Timestamp) {
        (**self).tick(now);
    }

    fn finish(&mut self) {
        (**self).finish();
    }

    fn clock_stepped(&mut self, before: Timestamp, now: Timestamp) {
        (**self).clock_stepped(before, now);
    }
}

/// Implements [`Observer`] for a struct of observers by handing every call to each field in
/// turn, in the order listed: a pipeline's observers as a named struct rather than nested
/// tuples, at no cost (the calls are static).
///
/// ```ignore
/// forward_observer!(impl[W: Write] Observers<W> { counters, detection, assets });
/// ```
#[macro_export]
macro_rules! forward_observer {
    (impl [$($generics:tt)*] $ty:ty { $($field:ident),+ $(,)? }) => {
        impl<$($generics)*> $crate::pipeline::Observer for $ty {
            fn flow_event(
                &mut self,
                ts: $crate::__rules::time::Timestamp,
                flow: &$crate::__rules::flow::FlowInfo,
                event: &$crate::__rules::flow::FlowEvent<'_>,
            ) {
                $($crate::pipeline::Observer::flow_event(&mut self.$field, ts, flow, event);)+
            }

            fn frame(&mut self, flow: u64, packet: &$crate::frame::CapturedPacket<'_>) {
                $($crate::pipeline::Observer::frame(&mut self.$field, flow, packet);)+
            }

            fn arp(
                &mut self,
                ts: $crate::__rules::time::Timestamp,
                frame: &$crate::__rules::network::ArpFrame,
            ) {
                $($crate::pipeline::Observer::arp(&mut self.$field, ts, frame);)+
            }

            #[inline]
            fn ip_source(
                &mut self,
                ts: $crate::__rules::time::Timestamp,
                vlan: u16,
                ip: ::std::net::IpAddr,
                mac: $crate::__rules::mac::Mac,
            ) {
                $($crate::pipeline::Observer::ip_source(&mut self.$field, ts, vlan, ip, mac);)+
            }

            fn tick(&mut self, now: $crate::__rules::time::Timestamp) {
                $($crate::pipeline::Observer::tick(&mut self.$field, now);)+
            }

            fn finish(&mut self) {
                $($crate::pipeline::Observer::finish(&mut self.$field);)+
            }

            fn clock_stepped(
                &mut self,
                before: $crate::__rules::time::Timestamp,
                now: $crate::__rules::time::Timestamp,
            ) {
                $($crate::pipeline::Observer::clock_stepped(&mut self.$field, before, now);)+
            }
        }
    };
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
    /// ARP packets seen.
    pub arp: u64,
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
        self.arp += other.arp;
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

/// How far capture time may go back before it is taken for a corrected clock (an NTP step, or
/// capture files replayed out of order): packets of one capture come in time order, but for
/// jitter far below this.
pub const CLOCK_STEP: Duration = Duration::from_secs(60);

/// Dissection, flow tracking and session decoding for a stream of packets.
pub struct Pipeline<O> {
    flows: FlowTable,
    defrag: Defragmenter,
    counters: PacketCounters,
    last_ts: Timestamp,
    observer: O,
    /// Times capture time went back by [`CLOCK_STEP`] or more. Kept after the observer: a
    /// field more among the counters before it shifted the detection state and cost 2-4% of
    /// replay time (timed interleaved).
    clock_steps: u64,
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
            clock_steps: 0,
        }
    }

    /// Processes one captured packet.
    pub fn packet(&mut self, packet: &CapturedPacket<'_>) {
        let now = packet.ts;
        if now < self.last_ts {
            self.went_back(now);
        } else {
            self.last_ts = now;
        }
        self.counters.packets += 1;
        self.counters.bytes += packet.data.len() as u64;
        if packet.truncated() {
            self.counters.truncated += 1;
        }
        let observer = &mut self.observer;
        let flow = match dissect::dissect(packet) {
            Dissection::Packet(p) => {
                let mut emit = |info: &FlowInfo, event: FlowEvent<'_>| {
                    observer.flow_event(now, info, &event);
                };
                let flow = self.flows.packet(now, &p, &mut emit);
                if let Some((vlan, ip, mac)) = self.flows.take_source() {
                    observer.ip_source(now, vlan, ip, Mac(mac));
                }
                flow
            }
            Dissection::Arp(frame) => {
                self.counters.arp += 1;
                observer.arp(now, &frame);
                None
            }
            Dissection::Fragment(fragment) => {
                let mut emit = |info: &FlowInfo, event: FlowEvent<'_>| {
                    observer.flow_event(now, info, &event);
                };
                self.counters.fragments += 1;
                let flow = match self.defrag.add(now, &fragment) {
                    Reassembly::Incomplete => None,
                    Reassembly::Invalid => {
                        self.counters.fragments_invalid += 1;
                        None
                    }
                    Reassembly::Complete(datagram) => {
                        self.counters.reassembled += 1;
                        match dissect::reassembled(&fragment, &datagram) {
                            Dissection::Packet(p) => self.flows.packet(now, &p, &mut emit),
                            Dissection::Ignored(why) => {
                                *self.counters.ignored.entry(why).or_default() += 1;
                                None
                            }
                            Dissection::Malformed(why) => {
                                *self.counters.malformed.entry(why).or_default() += 1;
                                None
                            }
                            // `reassembled` reads a transport header: neither can come back.
                            Dissection::Fragment(_) | Dissection::Arp(_) => {
                                *self
                                    .counters
                                    .malformed
                                    .entry("nested_fragment")
                                    .or_default() += 1;
                                None
                            }
                        }
                    }
                };
                self.counters.fragments_expired = self.defrag.dropped;
                flow
            }
            Dissection::Ignored(why) => {
                *self.counters.ignored.entry(why).or_default() += 1;
                None
            }
            Dissection::Malformed(why) => {
                *self.counters.malformed.entry(why).or_default() += 1;
                None
            }
        };
        if let Some(flow) = flow {
            self.observer.frame(flow, packet);
        }
    }

    /// Advances capture time to `now` without a packet (a live capture gone quiet): closes
    /// idle flows and lets the observer close what is due. Time goes backwards only by a
    /// clock step.
    pub fn tick(&mut self, now: Timestamp) {
        if self.last_ts.passed(now, CLOCK_STEP) {
            return self.clock_stepped(now);
        }
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

    /// A packet older than the latest: jitter, or a clock step if by [`CLOCK_STEP`] or more.
    #[cold]
    #[inline(never)]
    fn went_back(&mut self, now: Timestamp) {
        if self.last_ts.passed(now, CLOCK_STEP) {
            self.clock_stepped(now);
        }
    }

    /// Capture time went back from `last_ts` to `now` by [`CLOCK_STEP`] or more: the clock
    /// was corrected. Every flow closes (its times, and its waiting requests', lie in the
    /// future now), fragments in progress are given up, and the observer restarts its time
    /// windows. Otherwise idle flows would not expire, windows would not close and folded
    /// alerts would wait for as long as the step.
    fn clock_stepped(&mut self, now: Timestamp) {
        let before = self.last_ts;
        let observer = &mut self.observer;
        self.flows
            .restart_clock(before, now, &mut |info: &FlowInfo, event: FlowEvent<'_>| {
                observer.flow_event(before, info, &event)
            });
        self.defrag.give_up_all();
        self.counters.fragments_expired = self.defrag.dropped;
        self.observer.clock_stepped(before, now);
        self.clock_steps += 1;
        self.last_ts = now;
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

    /// Times capture time went back by [`CLOCK_STEP`] or more (a corrected clock).
    pub fn clock_steps(&self) -> u64 {
        self.clock_steps
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
