//! Detection below the Modbus transaction: floods against one server (SYNs that never
//! complete, connection storms, requests from many masters) and ARP and MAC spoofing.
//!
//! Each capture worker fills a [`Sample`] per second of capture time with a [`Tap`]; one
//! [`Watch`] merges every worker's samples of a second and judges the merged second once every
//! worker has moved past it. Per-server counts and the state of who holds which address are
//! therefore never split across workers (the fanout hashes host pairs, and ARP has no IP
//! header), and the same traffic raises the same alerts whatever the number of workers: the
//! summaries merge exactly ([`sketch`]).
//!
//! Pure like the rest of the crate: time is capture time, state is bounded.

mod claims;
mod episodes;
pub mod floods;
pub mod sample;
pub mod sketch;
mod tap;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashSet;

pub use claims::{ACTIVE, HANDOVER_QUIET, ROUTER_IPS, ROUTER_WINDOW};
pub use sample::Sample;
pub use tap::Tap;

use crate::alert::{Alert, RuleMeta, Severity, rule};
use crate::mac::Mac;
use crate::policy::matcher::AddrSet;
use crate::policy::{Policy, Role};
use crate::time::Timestamp;

/// What an ARP packet says, as the dissector reads it (Ethernet and IPv4 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFrame {
    /// Outermost VLAN id, 0 when untagged.
    pub vlan: u16,
    /// 1 request, 2 reply (others are kept but claim the same).
    pub operation: u16,
    /// Who speaks.
    pub sender_mac: Mac,
    /// The address it claims.
    pub sender_ip: Ipv4Addr,
    /// Whom it asks or answers.
    pub target_mac: Mac,
    /// The address asked for or answered to.
    pub target_ip: Ipv4Addr,
}

impl ArpFrame {
    /// A reply, or a gratuitous packet (sender and target address the same): the sender
    /// announces its address rather than asking for another's.
    pub fn announces(&self) -> bool {
        self.operation == 2 || self.sender_ip == self.target_ip
    }
}

/// The rules the watch raises, in the catalogue's order.
pub const RULES: [&RuleMeta; 5] = [
    &rule::SYN_FLOOD,
    &rule::CONNECTION_FLOOD,
    &rule::DISTRIBUTED_FLOOD,
    &rule::ARP_SPOOF,
    &rule::MAC_CHANGE,
];

/// One rule as the policy tunes it.
#[derive(Debug, Clone)]
struct Tuned {
    severity: Severity,
    window: Duration,
    suppress: Option<AddrSet>,
}

impl Tuned {
    fn suppressed(&self, ip: IpAddr) -> bool {
        self.suppress.as_ref().is_some_and(|s| s.contains(ip))
    }
}

/// A server's learned baseline, per second.
#[derive(Debug, Clone, Copy, Default)]
struct Baseline {
    connections: Option<f64>,
    requests: Option<f64>,
}

/// What the judges take from the policy and the agent's settings.
#[derive(Debug, Clone)]
struct Settings {
    agent: String,
    default_window: Duration,
    policy: Option<Arc<Policy>>,
    routers: FxHashSet<Mac>,
}

impl Settings {
    fn new(agent: String, default_window: Duration, policy: Option<Arc<Policy>>) -> Self {
        let routers = policy
            .iter()
            .flat_map(|p| p.assets.iter())
            .filter(|a| a.role == Some(Role::Router))
            .flat_map(|a| a.macs.iter().copied())
            .collect();
        Self {
            agent,
            default_window,
            policy,
            routers,
        }
    }

    fn agent(&self) -> &str {
        &self.agent
    }

    /// `rule` as tuned, or `None` when the policy turns it off.
    fn rule(&self, rule: &'static RuleMeta) -> Option<Tuned> {
        let tuning = self.policy.as_ref().and_then(|p| p.tuning(rule.id));
        if tuning.and_then(|t| t.enabled) == Some(false) {
            return None;
        }
        Some(Tuned {
            severity: tuning.and_then(|t| t.severity).unwrap_or(rule.severity),
            window: tuning
                .and_then(|t| t.window)
                .or(self.policy.as_ref().and_then(|p| p.default_window))
                .unwrap_or(self.default_window),
            suppress: tuning.and_then(|t| t.suppress.clone()),
        })
    }

    /// The policy's threshold for `rule`, if it sets one.
    fn threshold(&self, rule: &RuleMeta) -> Option<u32> {
        self.policy
            .as_ref()
            .and_then(|p| p.tuning(rule.id))
            .and_then(|t| t.threshold)
    }

    fn baseline(&self, ip: IpAddr) -> Baseline {
        let per_s =
            |r: &crate::policy::matcher::Rate| f64::from(r.count) / r.period.as_secs_f64().max(1.0);
        self.policy
            .as_ref()
            .and_then(|p| p.asset_of(ip))
            .map(|a| Baseline {
                connections: a.connection_rate.as_ref().map(per_s),
                requests: a.request_rate.as_ref().map(per_s),
            })
            .unwrap_or_default()
    }

    /// The Ethernet addresses the policy declares for `ip`'s asset, if it declares any.
    fn declared_macs(&self, ip: IpAddr) -> Option<&[Mac]> {
        self.policy
            .as_ref()
            .and_then(|p| p.asset_of(ip))
            .map(|a| a.macs.as_slice())
            .filter(|m| !m.is_empty())
    }

    fn is_router(&self, mac: Mac) -> bool {
        self.routers.contains(&mac)
    }
}

/// Seconds a worker may lag the others before its seconds are judged without it (a stalled
/// worker must not stall detection).
pub const MAX_LAG_SECONDS: u64 = 10;

/// Merges the samples of every worker and judges each second once all have passed it.
#[derive(Debug)]
pub struct Watch {
    settings: Settings,
    /// Per worker: every second before this one is complete (0: nothing heard from it yet,
    /// so it holds nothing back).
    watermarks: Vec<u64>,
    /// Per worker: whether its capture ended.
    done: Vec<bool>,
    /// Per worker: whether its capture clock stepped back since all last did.
    stepped: Vec<bool>,
    /// Seconds waiting for a worker, merged so far.
    pending: BTreeMap<u64, Sample>,
    /// The latest second judged.
    judged: Option<u64>,
    claims: claims::Claims,
    /// Servers known to serve Modbus (floods are judged for them only).
    servers: FxHashSet<sample::Target>,
    episodes: episodes::Episodes,
}

impl Watch {
    /// A watch over `workers` workers' samples, raising alerts as `agent`, folding in
    /// `default_window` unless the policy says otherwise.
    pub fn new(
        workers: usize,
        agent: String,
        default_window: Duration,
        policy: Option<Arc<Policy>>,
    ) -> Self {
        Self {
            settings: Settings::new(agent, default_window, policy),
            watermarks: vec![0; workers.max(1)],
            done: vec![false; workers.max(1)],
            stepped: vec![false; workers.max(1)],
            pending: BTreeMap::new(),
            judged: None,
            claims: claims::Claims::default(),
            servers: FxHashSet::default(),
            episodes: episodes::Episodes::default(),
        }
    }

    /// Puts a new policy in force.
    pub fn set_policy(&mut self, policy: Option<Arc<Policy>>) {
        self.settings = Settings::new(
            std::mem::take(&mut self.settings.agent),
            self.settings.default_window,
            policy,
        );
    }

    /// Takes `worker`'s finished seconds and its watermark (every second before it is
    /// complete), and judges every second all workers have passed.
    pub fn submit(
        &mut self,
        worker: usize,
        samples: Vec<Sample>,
        watermark: u64,
        out: &mut impl FnMut(Alert),
    ) {
        for sample in samples {
            if self.judged.is_some_and(|j| sample.second <= j) {
                // Later than its second was judged (a lagging worker, a stepped clock): on
                // its own rather than never.
                self.judge(&sample, out);
                continue;
            }
            match self.pending.get_mut(&sample.second) {
                Some(merged) => merged.merge(&sample),
                None => {
                    self.pending.insert(sample.second, sample);
                }
            }
        }
        if let Some(w) = self.watermarks.get_mut(worker) {
            *w = (*w).max(watermark);
        }
        let running = || {
            self.watermarks
                .iter()
                .zip(&self.done)
                .filter(|(w, done)| **w > 0 && !**done)
                .map(|(w, _)| *w)
        };
        let (Some(slowest), Some(fastest)) = (running().min(), running().max()) else {
            return;
        };
        let complete = slowest.max(fastest.saturating_sub(MAX_LAG_SECONDS));
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= complete {
                break;
            }
            let sample = entry.remove();
            self.judged = Some(self.judged.map_or(sample.second, |j| j.max(sample.second)));
            self.judge(&sample, out);
        }
        let now = Timestamp::from_secs(complete);
        self.episodes.flush(now, &self.settings.agent, out);
    }

    /// `worker`'s capture ended (after its last [`Watch::submit`]): it holds nothing back any
    /// more, and once every worker's has ended, everything is judged and every episode closed.
    pub fn done(&mut self, worker: usize, out: &mut impl FnMut(Alert)) {
        if let Some(d) = self.done.get_mut(worker) {
            *d = true;
        }
        if self.done.iter().all(|d| *d) {
            self.finish(out);
        } else {
            self.submit(worker, Vec::new(), 0, out);
        }
    }

    /// `worker`'s capture clock stepped back (after its last [`Watch::submit`] of the seconds
    /// before): it holds nothing back until it reports again, and once every worker still
    /// running has stepped, what waits is judged, every episode closed and the seconds after
    /// the step merge afresh (otherwise each would count as late and be judged unmerged).
    pub fn clock_stepped(&mut self, worker: usize, out: &mut impl FnMut(Alert)) {
        if let Some(s) = self.stepped.get_mut(worker) {
            *s = true;
        }
        if let Some(w) = self.watermarks.get_mut(worker) {
            *w = 0;
        }
        if self.stepped.iter().zip(&self.done).all(|(s, d)| *s || *d) {
            while let Some((_, sample)) = self.pending.pop_first() {
                self.judge(&sample, out);
            }
            self.episodes.finish(&self.settings.agent, out);
            self.judged = None;
            self.stepped.fill(false);
        }
    }

    /// Judges everything still waiting and closes every episode (the capture ended).
    pub fn finish(&mut self, out: &mut impl FnMut(Alert)) {
        while let Some((_, sample)) = self.pending.pop_first() {
            self.judged = Some(self.judged.map_or(sample.second, |j| j.max(sample.second)));
            self.judge(&sample, out);
        }
        self.episodes.finish(&self.settings.agent, out);
    }

    fn judge(&mut self, sample: &Sample, out: &mut impl FnMut(Alert)) {
        floods::judge(
            sample,
            &mut self.servers,
            &self.settings,
            &mut self.episodes,
            out,
        );
        self.claims
            .judge(sample, &self.settings, &mut self.episodes, out);
    }
}

#[cfg(test)]
mod tests;
