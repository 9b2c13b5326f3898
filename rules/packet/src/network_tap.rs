//! Network-level sampling on the packet path: the pure [`Tap`] of `otwatch-rules` as a
//! pipeline [`Observer`]. Its seconds go to an `otwatch_rules::network::Watch`, which judges
//! them with every other worker's.

use std::net::IpAddr;

use otwatch_rules::flow::{FlowEvent, FlowInfo};
use otwatch_rules::mac::Mac;
use otwatch_rules::network::{ArpFrame, Tap};
use otwatch_rules::time::Timestamp;

use crate::pipeline::Observer;

impl Observer for Tap {
    #[inline]
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        Tap::flow_event(self, ts, flow, event);
    }

    fn arp(&mut self, ts: Timestamp, frame: &ArpFrame) {
        Tap::arp(self, ts, frame);
    }

    #[inline]
    fn ip_source(&mut self, ts: Timestamp, vlan: u16, ip: IpAddr, mac: Mac) {
        Tap::ip_source(self, ts, vlan, ip, mac);
    }

    fn tick(&mut self, now: Timestamp) {
        Tap::tick(self, now);
    }

    fn finish(&mut self) {
        Tap::finish(self);
    }

    fn clock_stepped(&mut self, _before: Timestamp, _now: Timestamp) {
        // The seconds so far are complete; counting starts again at the new time.
        Tap::finish(self);
    }
}
