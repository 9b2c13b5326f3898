//! What learning keeps for the network-level detectors (policy language 2): the Ethernet
//! addresses each host answered from, which Ethernet addresses are routers (they carry many
//! hosts' traffic), and how many connections each master opened to each server in its busiest
//! second (the unit floods are judged in: a plant whose masters all connect at once must not
//! look like a storm against its own baseline).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use super::busiest::BusiestSecond;
use crate::mac::Mac;
use crate::network::{ArpFrame, ROUTER_IPS};
use crate::time::Timestamp;

/// Hosts whose Ethernet addresses are learned (the rest are not: memory stays flat).
const MAX_HOSTS: usize = 4_096;
/// Ethernet addresses remembered per host, and addresses per Ethernet address (enough to
/// call it a router).
const MAX_PER_KEY: usize = 64;

/// Ethernet addresses and connection rates seen.
#[derive(Debug, Default)]
pub(super) struct Link {
    /// Per address, the Ethernet addresses its traffic came from.
    macs: BTreeMap<IpAddr, BTreeSet<Mac>>,
    /// Per Ethernet address, the addresses it carried.
    carried: BTreeMap<Mac, BTreeSet<IpAddr>>,
    /// Per Ethernet address, the addresses it claimed in ARP.
    claimed: BTreeMap<Mac, BTreeSet<Ipv4Addr>>,
    /// Per (master, server), connections opened per second.
    connections: BTreeMap<(IpAddr, IpAddr), BusiestSecond>,
}

impl Link {
    /// IP traffic from `ip` with Ethernet source `mac` (the flow table reports it once a
    /// second per side of a flow, not per frame).
    pub fn ip_source(&mut self, ip: IpAddr, mac: Mac) {
        if !mac.is_group() && !mac.is_zero() {
            self.saw(ip, mac);
        }
    }

    fn saw(&mut self, ip: IpAddr, mac: Mac) {
        if self.macs.len() < MAX_HOSTS || self.macs.contains_key(&ip) {
            let set = self.macs.entry(ip).or_default();
            if set.len() < MAX_PER_KEY {
                set.insert(mac);
            }
        }
        if self.carried.len() < MAX_HOSTS || self.carried.contains_key(&mac) {
            let set = self.carried.entry(mac).or_default();
            if set.len() < MAX_PER_KEY {
                set.insert(ip);
            }
        }
    }

    /// An ARP packet: its sender claims its address.
    pub fn arp(&mut self, frame: &ArpFrame) {
        let mac = frame.sender_mac;
        if mac.is_group() || mac.is_zero() || frame.sender_ip.is_unspecified() {
            return;
        }
        self.saw(IpAddr::V4(frame.sender_ip), mac);
        if self.claimed.len() < MAX_HOSTS || self.claimed.contains_key(&mac) {
            let set = self.claimed.entry(mac).or_default();
            if set.len() < MAX_PER_KEY {
                set.insert(frame.sender_ip);
            }
        }
    }

    /// A connection opened with a handshake from `client` to `server` at `ts`.
    pub fn connection(&mut self, ts: Timestamp, client: IpAddr, server: IpAddr) {
        if self.connections.len() >= MAX_HOSTS && !self.connections.contains_key(&(client, server))
        {
            return;
        }
        self.connections
            .entry((client, server))
            .or_default()
            .add(ts);
    }

    /// Takes in another worker's share.
    pub fn merge(&mut self, other: Link) {
        for (ip, macs) in other.macs {
            for mac in macs {
                self.saw(ip, mac);
            }
        }
        for (mac, ips) in other.carried {
            for ip in ips {
                self.saw(ip, mac);
            }
        }
        for (mac, ips) in other.claimed {
            let set = self.claimed.entry(mac).or_default();
            set.extend(ips.into_iter().take(MAX_PER_KEY));
        }
        for (key, theirs) in other.connections {
            let ours = self.connections.entry(key).or_default();
            ours.merge(&theirs);
        }
    }

    /// Whether `mac` carried the traffic of [`ROUTER_IPS`] or more addresses.
    pub fn is_router(&self, mac: Mac) -> bool {
        self.carried
            .get(&mac)
            .is_some_and(|ips| ips.len() >= ROUTER_IPS)
    }

    /// The Ethernet addresses `ip` answered from, routers left out.
    pub fn macs_of(&self, ip: IpAddr) -> Vec<Mac> {
        self.macs
            .get(&ip)
            .into_iter()
            .flatten()
            .copied()
            .filter(|m| !self.is_router(*m))
            .collect()
    }

    /// Routers with the address each claimed in ARP, if it claimed one, and how many
    /// addresses each carried.
    pub fn routers(&self) -> Vec<(Mac, Option<Ipv4Addr>, usize)> {
        self.carried
            .iter()
            .filter(|(_, ips)| ips.len() >= ROUTER_IPS)
            .map(|(mac, ips)| {
                let own = self.claimed.get(mac).and_then(|c| c.iter().next().copied());
                (*mac, own, ips.len())
            })
            .collect()
    }

    /// Connections to `server` in each master's busiest second, added up (an upper bound of
    /// the busiest second).
    pub fn connections_to(&self, server: IpAddr) -> u32 {
        self.connections
            .iter()
            .filter(|((_, s), _)| *s == server)
            .map(|(_, c)| c.peak())
            .sum()
    }
}
