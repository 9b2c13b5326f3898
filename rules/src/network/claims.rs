//! Which Ethernet address holds which IP address, from ARP and from the source of IP
//! traffic, judged per second of merged samples.
//!
//! - IP traffic says which Ethernet addresses are active and which addresses each carries;
//!   only ARP claims an address. Traffic from another Ethernet address that never claimed the
//!   address in ARP is forwarded (a router, a firewall between two captured segments), and
//!   an ARP claim takes over quietly from a holder that never claimed it in ARP either.
//! - Two Ethernet addresses claiming one IP address in ARP while both are active (the one that
//!   held it is heard again after the other appeared), or an ARP announcement moving an
//!   address that another device holds to an Ethernet address that already serves other
//!   hosts, raise `spoof.arp`, naming both.
//! - A clean handover (the holder falls silent for [`HANDOVER_QUIET`], the newcomer carries
//!   on: a replaced device, a DHCP change) raises `spoof.mac_change` at low severity, unless
//!   the policy declares the new Ethernet address on the asset (`macs = [...]`). An address
//!   first seen at an Ethernet address its asset does not declare raises it too.
//! - Routers are not spoofers: every routed host's traffic carries the router's Ethernet
//!   address, so one that carries [`ROUTER_IPS`] or more addresses within [`ROUTER_WINDOW`] of
//!   first being seen, without ever having taken an address over, is a router (as is one the
//!   policy declares on an asset with `role = "router"`), and the traffic it carries claims
//!   nothing. Its ARP claims are judged all the same, unless the policy declares it (proxy
//!   ARP): a SYN flood from spoofed sources makes the flooder look like a router.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use rustc_hash::FxHashMap;

use super::Settings;
use super::episodes::{Episodes, Occurrence};
use super::sample::{ClaimKey, ClaimSeen, Sample, how};
use crate::alert::{Alert, RuleMeta, rule};
use crate::mac::Mac;
use crate::time::Timestamp;

/// Addresses within [`ROUTER_WINDOW`] of an Ethernet address's first sighting that make it a
/// router.
pub const ROUTER_IPS: usize = 4;
/// See [`ROUTER_IPS`].
pub const ROUTER_WINDOW: Duration = Duration::from_secs(60);
/// How long the holder of an address must stay silent, while a newcomer carries on, for the
/// change to be a handover rather than a conflict.
pub const HANDOVER_QUIET: Duration = Duration::from_secs(10);
/// An Ethernet address heard with an address within this long serves it.
pub const ACTIVE: Duration = Duration::from_secs(60);
/// A newcomer silent this long is forgotten.
const CONTENDER_EXPIRY: Duration = Duration::from_secs(300);
/// Most addresses and Ethernet addresses tracked (the least recently heard go first).
const MAX_TRACKED: usize = 65_536;
/// Addresses remembered per Ethernet address.
const IPS_PER_MAC: usize = 8;

#[derive(Debug, Clone)]
struct Contender {
    mac: Mac,
    first: Timestamp,
    last: Timestamp,
    announced: bool,
}

#[derive(Debug, Clone)]
struct Host {
    holder: Mac,
    holder_last: Timestamp,
    /// Whether the holder claimed the address in ARP (not only carried its traffic).
    holder_arp: bool,
    /// A second Ethernet address that claimed it in ARP, being judged.
    contender: Option<Contender>,
}

/// An address an Ethernet address carried: since when, until when, and whether it claimed
/// it in ARP (its own, most likely).
#[derive(Debug, Clone, Copy)]
struct Carried {
    at: (u16, IpAddr),
    first: Timestamp,
    last: Timestamp,
    arp: bool,
}

#[derive(Debug, Clone, Default)]
struct MacInfo {
    first: Timestamp,
    last: Timestamp,
    /// The addresses it carried lately.
    ips: Vec<Carried>,
    /// Distinct addresses it carried within [`ROUTER_WINDOW`] of its first sighting.
    early_ips: usize,
    router: bool,
    /// It took an address over from another device: never taken for a router.
    took_over: bool,
}

/// The state of every address and Ethernet address heard.
#[derive(Debug, Default)]
pub(super) struct Claims {
    hosts: FxHashMap<(u16, IpAddr), Host>,
    macs: FxHashMap<Mac, MacInfo>,
    contested: BTreeSet<(u16, IpAddr)>,
}

impl Claims {
    /// Judges one second of merged samples.
    pub fn judge(
        &mut self,
        sample: &Sample,
        settings: &Settings,
        episodes: &mut Episodes,
        out: &mut impl FnMut(Alert),
    ) {
        let mut claims: Vec<(&ClaimKey, &ClaimSeen)> = sample.claims.iter().collect();
        claims.sort_unstable_by_key(|(k, s)| (s.first, **k));
        for (key, seen) in claims {
            self.claim(key, seen, settings, episodes, out);
        }
        let now = Timestamp::from_secs(sample.second.saturating_add(1));
        let contested: Vec<(u16, IpAddr)> = self.contested.iter().copied().collect();
        for at in contested {
            self.judge_host(at, now, settings, episodes, out);
        }
        if self.hosts.len() > MAX_TRACKED || self.macs.len() > MAX_TRACKED {
            self.make_room(now);
        }
    }

    fn claim(
        &mut self,
        key: &ClaimKey,
        seen: &ClaimSeen,
        settings: &Settings,
        episodes: &mut Episodes,
        out: &mut impl FnMut(Alert),
    ) {
        if key.mac.is_group() || key.mac.is_zero() || !unicast(key.ip) {
            return;
        }
        let at = (key.vlan, key.ip);
        let info = self.macs.entry(key.mac).or_insert_with(|| MacInfo {
            first: seen.first,
            ..MacInfo::default()
        });
        info.last = info.last.max(seen.last);
        let in_arp = seen.how & how::ARP != 0;
        match info.ips.iter_mut().find(|c| c.at == at) {
            Some(entry) => {
                entry.last = entry.last.max(seen.last);
                entry.arp |= in_arp;
            }
            None => {
                if seen.first.since(info.first) <= ROUTER_WINDOW {
                    info.early_ips += 1;
                }
                // Full: the least recently heard goes, addresses claimed in ARP last (a
                // flood of spoofed sources must not push out the flooder's own).
                if info.ips.len() >= IPS_PER_MAC
                    && let Some(oldest) = info
                        .ips
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, c)| (c.arp, c.last))
                        .map(|(i, _)| i)
                {
                    info.ips.swap_remove(oldest);
                }
                info.ips.push(Carried {
                    at,
                    first: seen.first,
                    last: seen.last,
                    arp: in_arp,
                });
            }
        }
        if settings.is_router(key.mac) || (info.early_ips >= ROUTER_IPS && !info.took_over) {
            info.router = true;
        }
        let announced = seen.how & how::ANNOUNCED != 0;
        let by_arp = seen.how & how::ARP != 0;
        // A router's traffic carries other hosts' addresses: not claims. Its ARP still is
        // (a flood from spoofed sources must not buy a poisoner the exemption), unless the
        // policy declares it a router (proxy ARP).
        if (info.router && !by_arp) || settings.is_router(key.mac) {
            return;
        }
        let Some(host) = self.hosts.get_mut(&at) else {
            self.hosts.insert(
                at,
                Host {
                    holder: key.mac,
                    holder_last: seen.last,
                    holder_arp: by_arp,
                    contender: None,
                },
            );
            if by_arp {
                undeclared(key, seen, settings, episodes, out);
            }
            return;
        };
        if host.holder == key.mac {
            host.holder_last = host.holder_last.max(seen.last);
            host.holder_arp |= by_arp;
            return;
        }
        if let Some(c) = host.contender.as_mut().filter(|c| c.mac == key.mac) {
            c.last = c.last.max(seen.last);
            c.announced |= announced;
            return;
        }
        if !by_arp {
            // IP traffic from another Ethernet address that never claimed the address in ARP:
            // a router or firewall forwarding it, not a claim.
            return;
        }
        let holder = host.holder;
        let holder_last = host.holder_last;
        let holder_active = seen.first.since(holder_last) <= ACTIVE;
        let holder_arp = host.holder_arp;
        let holder_routes = self.macs.get(&holder).is_some_and(|m| m.router);
        // An announcement moving an address another device holds to an Ethernet address that
        // already serves other hosts: a poisoner claiming a victim's address.
        let others = self.serves_others(key.mac, at, seen.first);
        let poisoning = announced
            && holder_active
            && !holder_routes
            && !others.is_empty()
            && !both_declared(settings, key.ip, holder, key.mac);
        if !poisoning && (!holder_arp || holder_routes) {
            // Only forwarded traffic held it so far: its own device speaks now.
            self.hand_over(at, key.mac, seen.last);
            undeclared(key, seen, settings, episodes, out);
            return;
        }
        if let Some(host) = self.hosts.get_mut(&at) {
            host.contender = Some(Contender {
                mac: key.mac,
                first: seen.first,
                last: seen.last,
                announced,
            });
        }
        self.contested.insert(at);
        if poisoning {
            if let Some(info) = self.macs.get_mut(&key.mac) {
                info.took_over = true;
            }
            let message = format!(
                "ARP announces {} at {}, which also serves {}; {} held it and was heard {} before",
                key.ip,
                key.mac,
                others
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                holder,
                human(seen.first.since(holder_last))
            );
            let src = others.first().copied().unwrap_or(key.ip);
            raise(
                &rule::ARP_SPOOF,
                key,
                seen.first,
                seen.last,
                src,
                message,
                settings,
                episodes,
                out,
            );
        }
    }

    /// The other addresses `mac` served lately (not `except`): those it claimed in ARP
    /// first (its own, most likely, which the alert names as the source), then by when it
    /// was first heard with them.
    fn serves_others(&self, mac: Mac, except: (u16, IpAddr), now: Timestamp) -> Vec<IpAddr> {
        let mut v: Vec<Carried> = self
            .macs
            .get(&mac)
            .map(|m| {
                m.ips
                    .iter()
                    .filter(|c| c.at != except && now.since(c.last) <= ACTIVE)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        v.sort_unstable_by_key(|c| (!c.arp, c.first, c.at));
        v.into_iter().map(|c| c.at.1).collect()
    }

    fn judge_host(
        &mut self,
        at: (u16, IpAddr),
        now: Timestamp,
        settings: &Settings,
        episodes: &mut Episodes,
        out: &mut impl FnMut(Alert),
    ) {
        let Some(host) = self.hosts.get(&at) else {
            self.contested.remove(&at);
            return;
        };
        let Some(c) = host.contender.clone() else {
            self.contested.remove(&at);
            return;
        };
        let holder = host.holder;
        let holder_last = host.holder_last;
        if settings.is_router(c.mac) {
            self.drop_contender(at);
            return;
        }
        let key = ClaimKey {
            vlan: at.0,
            ip: at.1,
            mac: c.mac,
        };
        let second_start = now.saturating_sub(Duration::from_secs(1));
        if holder_last > c.first && now.since(c.last) <= HANDOVER_QUIET {
            // Both active: the holder was heard after the newcomer appeared, and the newcomer
            // is still heard. Each second either is heard counts once.
            if both_declared(settings, at.1, holder, c.mac)
                || (c.last < second_start && holder_last < second_start)
            {
                return;
            }
            if let Some(info) = self.macs.get_mut(&c.mac) {
                info.took_over = true;
            }
            let others = self.serves_others(c.mac, at, now);
            let message = format!(
                "{} is claimed by {}{} and by {}, both active{}",
                at.1,
                c.mac,
                if others.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (which also serves {})",
                        others
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                holder,
                if c.announced {
                    "; the newcomer announced it in ARP"
                } else {
                    ""
                }
            );
            let src = others.first().copied().unwrap_or(at.1);
            let first = c.first.max(second_start);
            raise(
                &rule::ARP_SPOOF,
                &key,
                first,
                c.last.max(holder_last),
                src,
                message,
                settings,
                episodes,
                out,
            );
        } else if now.since(holder_last) >= HANDOVER_QUIET && c.last >= holder_last {
            // The holder fell silent and the newcomer carried on: a handover.
            self.hand_over(at, c.mac, c.last);
            let declared = settings.declared_macs(at.1);
            if declared.is_some_and(|d| d.contains(&c.mac)) {
                return;
            }
            let message = format!(
                "{} moved from {} (silent for {}) to {}{}",
                at.1,
                holder,
                human(now.since(holder_last)),
                c.mac,
                match declared {
                    Some(d) => format!("; the policy declares {}", list(d)),
                    None => "; the policy declares no Ethernet address for it".to_string(),
                }
            );
            raise(
                &rule::MAC_CHANGE,
                &key,
                c.first,
                c.last,
                at.1,
                message,
                settings,
                episodes,
                out,
            );
        } else if now.since(c.last) >= CONTENDER_EXPIRY {
            self.drop_contender(at);
        }
    }

    /// `mac` holds `at` from now on, having claimed it in ARP (last heard at `last`).
    fn hand_over(&mut self, at: (u16, IpAddr), mac: Mac, last: Timestamp) {
        if let Some(h) = self.hosts.get_mut(&at) {
            h.holder = mac;
            h.holder_last = last;
            h.holder_arp = true;
            h.contender = None;
        }
        self.contested.remove(&at);
    }

    fn drop_contender(&mut self, at: (u16, IpAddr)) {
        if let Some(h) = self.hosts.get_mut(&at) {
            h.contender = None;
        }
        self.contested.remove(&at);
    }

    /// Forgets what was not heard for [`ACTIVE`], then, if still full, half of the rest.
    fn make_room(&mut self, now: Timestamp) {
        self.hosts
            .retain(|_, h| now.since(h.holder_last) <= ACTIVE || h.contender.is_some());
        self.macs
            .retain(|_, m| now.since(m.last) <= ACTIVE || m.router);
        if self.hosts.len() > MAX_TRACKED / 2 {
            let mut n = 0usize;
            self.hosts.retain(|_, _| {
                n += 1;
                n.is_multiple_of(2)
            });
        }
        if self.macs.len() > MAX_TRACKED / 2 {
            let mut n = 0usize;
            self.macs.retain(|_, _| {
                n += 1;
                n.is_multiple_of(2)
            });
        }
        let hosts = &self.hosts;
        self.contested.retain(|at| hosts.contains_key(at));
    }
}

/// Raises `spoof.mac_change` when `key`'s address is held by an Ethernet address its asset
/// does not declare (when it declares any).
fn undeclared(
    key: &ClaimKey,
    seen: &ClaimSeen,
    settings: &Settings,
    episodes: &mut Episodes,
    out: &mut impl FnMut(Alert),
) {
    if let Some(declared) = settings.declared_macs(key.ip)
        && !declared.contains(&key.mac)
    {
        let message = format!(
            "{} answers from {}, which the policy does not declare (declared: {})",
            key.ip,
            key.mac,
            list(declared)
        );
        raise(
            &rule::MAC_CHANGE,
            key,
            seen.first,
            seen.last,
            key.ip,
            message,
            settings,
            episodes,
            out,
        );
    }
}

/// Whether the policy declares both Ethernet addresses for `ip` (a device with two ports).
fn both_declared(settings: &Settings, ip: IpAddr, a: Mac, b: Mac) -> bool {
    settings
        .declared_macs(ip)
        .is_some_and(|d| d.contains(&a) && d.contains(&b))
}

/// Whether `ip` is one host's address (not unspecified, broadcast or multicast).
fn unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

fn list(macs: &[Mac]) -> String {
    macs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn human(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[allow(clippy::too_many_arguments)]
fn raise(
    meta: &'static RuleMeta,
    key: &ClaimKey,
    first: Timestamp,
    last: Timestamp,
    src: IpAddr,
    message: String,
    settings: &Settings,
    episodes: &mut Episodes,
    out: &mut impl FnMut(Alert),
) {
    let Some(tuned) = settings.rule(meta) else {
        return;
    };
    if tuned.suppressed(key.ip) || tuned.suppressed(src) {
        return;
    }
    let occurrence = Occurrence {
        rule: meta,
        severity: tuned.severity,
        first,
        last: last.max(first),
        src: (src, 0),
        dst: (key.ip, 0),
        count: 1,
        message,
    };
    episodes.add(
        (meta.id, key.vlan, key.ip, 0, key.mac.0),
        occurrence,
        tuned.window,
        settings.agent(),
        out,
    );
}
