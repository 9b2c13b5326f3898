//! The asset inventory an agent builds from traffic: for each host that speaks Modbus, its
//! Ethernet addresses, the units it answers for, whether it polls (master) or is polled
//! (slave), the functions used, its peers, and what it says about itself in Read Device
//! Identification responses. The agent sends what changed to the collector, which merges the
//! observations of every agent.
//!
//! Memory is bounded: at most [`MAX_HOSTS`] hosts and [`MAX_PEERS`] peers per host are
//! tracked, so a scan of a whole subnet cannot grow the inventory without limit (hosts beyond
//! the limit are counted instead).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::flow::{FlowEvent, FlowInfo};
use crate::modbus::{ObjectId, Response};
use crate::policy::Policy;
use crate::session::Event;
use crate::time::Timestamp;
use crate::validate;
use crate::wire::AssetObservation;

/// Most hosts tracked at once.
pub const MAX_HOSTS: usize = 65_536;

/// Most peers recorded per host.
pub const MAX_PEERS: usize = 256;

/// Most Ethernet addresses recorded per host (more means spoofing or a routed host): as many as
/// the collector takes in one observation.
pub const MAX_MACS: usize = crate::validate::MAX_MACS;

/// Hosts seen in traffic, with what changed since the last [`Inventory::take_changed`].
#[derive(Debug, Default)]
pub struct Inventory {
    hosts: HashMap<IpAddr, Host>,
    untracked: u64,
}

#[derive(Debug)]
struct Host {
    seen: AssetObservation,
    /// `seen.macs` as bytes, to check without formatting.
    macs: Vec<[u8; 6]>,
    changed: bool,
}

impl Host {
    /// Adds an Ethernet address; true when it was new.
    fn add_mac(&mut self, mac: Option<[u8; 6]>) -> bool {
        let Some(mac) = mac else {
            return false;
        };
        if self.macs.contains(&mac) || self.macs.len() >= MAX_MACS {
            return false;
        }
        self.macs.push(mac);
        let text = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        insert_sorted(&mut self.seen.macs, text)
    }
}

impl Inventory {
    /// An empty inventory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hosts not tracked because the inventory was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Hosts tracked.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host was seen yet.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Learns from one flow event: a decoded request makes its client a master and its server
    /// a slave; a device-identification response names the server's vendor and product.
    pub fn observe(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        let FlowEvent::Session(event) = event else {
            return;
        };
        match event {
            Event::Request {
                unit_id, request, ..
            } => {
                let function = request.function().code();
                let (client, server) = (flow.client.ip(), flow.server.ip());
                if let Some(master) = self.host(client, ts) {
                    let mut fresh = !master.seen.master;
                    master.seen.master = true;
                    fresh |= insert_sorted(&mut master.seen.functions, function);
                    fresh |= add_peer(&mut master.seen, server);
                    fresh |= master.add_mac(flow.client_mac);
                    master.changed |= fresh;
                }
                if let Some(slave) = self.host(server, ts) {
                    let mut fresh = !slave.seen.slave;
                    slave.seen.slave = true;
                    fresh |= insert_sorted(&mut slave.seen.functions, function);
                    fresh |= insert_sorted(&mut slave.seen.units, *unit_id);
                    fresh |= add_peer(&mut slave.seen, client);
                    fresh |= slave.add_mac(flow.server_mac);
                    slave.changed |= fresh;
                }
            }
            Event::Transaction(t) => {
                let Some(Response::ReadDeviceId(id)) = t.response else {
                    return;
                };
                let Some(server) = self.host(flow.server.ip(), ts) else {
                    return;
                };
                let text = |object: u8| {
                    id.object(ObjectId(object))
                        .map(|v| {
                            let mut text = String::from_utf8_lossy(v).trim().to_string();
                            // Invalid bytes become three-byte replacement characters.
                            validate::truncate(&mut text, validate::MAX_LABEL);
                            text
                        })
                        .filter(|v| !v.is_empty())
                };
                let s = &mut server.seen;
                for (field, object) in [
                    (&mut s.vendor, 0),
                    (&mut s.product_code, 1),
                    (&mut s.revision, 2),
                    (&mut s.product_name, 4),
                ] {
                    if let Some(value) = text(object)
                        && field.as_deref() != Some(value.as_str())
                    {
                        *field = Some(value);
                        server.changed = true;
                    }
                }
            }
            _ => {}
        }
    }

    /// The host's entry, created if there is room; its last-seen time moves to `ts`.
    fn host(&mut self, ip: IpAddr, ts: Timestamp) -> Option<&mut Host> {
        let full = self.hosts.len() >= MAX_HOSTS;
        if full && !self.hosts.contains_key(&ip) {
            self.untracked += 1;
            return None;
        }
        let host = self.hosts.entry(ip).or_insert_with(|| Host {
            seen: AssetObservation::new(ip, ts),
            macs: Vec::new(),
            changed: true,
        });
        host.seen.last_seen = host.seen.last_seen.max(ts);
        Some(host)
    }

    /// Observations of hosts that changed since the last call (new hosts, new units,
    /// functions, peers, addresses or identity), named and zoned from `policy` where it lists
    /// them. A host's last-seen time alone does not count as a change.
    pub fn take_changed(&mut self, policy: Option<&Policy>) -> Vec<AssetObservation> {
        let mut out: Vec<AssetObservation> = self
            .hosts
            .values_mut()
            .filter(|h| h.changed)
            .map(|h| {
                h.changed = false;
                let mut seen = h.seen.clone();
                if let Some(asset) = policy.and_then(|p| p.asset_of(seen.ip)) {
                    seen.name = Some(asset.name.clone());
                    seen.zone.clone_from(&asset.zone);
                    seen.criticality = asset.criticality.map(|c| c.name().to_string());
                }
                seen
            })
            .collect();
        out.sort_by_key(|a| a.ip);
        out
    }
}

/// Inserts into a sorted list; true when the item was new.
fn insert_sorted<T: Ord>(list: &mut Vec<T>, item: T) -> bool {
    match list.binary_search(&item) {
        Ok(_) => false,
        Err(at) => {
            list.insert(at, item);
            true
        }
    }
}

/// Adds a peer if there is room; true when it was new.
fn add_peer(seen: &mut AssetObservation, peer: IpAddr) -> bool {
    match seen.peers.binary_search(&peer) {
        Ok(_) => false,
        Err(_) if seen.peers.len() >= MAX_PEERS => false,
        Err(at) => {
            seen.peers.insert(at, peer);
            true
        }
    }
}

#[cfg(test)]
mod tests;
