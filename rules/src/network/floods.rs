//! Floods against one server, judged per second of merged samples: SYNs that never complete
//! (`dos.syn_flood`), connections far above what the server takes (`dos.connection_flood`),
//! and requests from many masters far above the server's rate (`dos.distributed_flood`).
//!
//! Each is judged against a limit per second: the policy's baseline for the server
//! (`connection_rate`, `request_rate` on its asset, which `learn` writes) times
//! [`BASELINE_FACTOR`], never below a floor; without a baseline, the detector's threshold
//! (`[detectors."dos.syn_flood"] threshold = ...`) or its default.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustc_hash::FxHashSet;

use super::Settings;
use super::episodes::{Episodes, Occurrence};
use super::sample::{Sample, Target, TargetCounts};
use crate::alert::{Alert, RuleMeta, rule};

/// Default limit of connection attempts per second to one server when most never complete.
pub const SYN_PER_S: u64 = 100;
/// Default limit of connections per second to one server.
pub const CONNECTIONS_PER_S: u64 = 50;
/// Default limit of requests per second to one server from many masters.
pub const REQUESTS_PER_S: u64 = 1_000;
/// Distinct sources that make a request flood distributed (fewer is the per-connection
/// `dos.request_flood`'s business, or a fast poller).
pub const MIN_SOURCES: u64 = 10;
/// Most Modbus servers remembered (a server beyond it is judged only in a second that
/// shows it serves Modbus).
const MAX_SERVERS: usize = 65_536;
/// A learned baseline times this is the limit.
pub const BASELINE_FACTOR: u64 = 10;
/// Limits never go below these, baseline or not (an HMI reconnecting after a blip opens a
/// handful of connections at once).
pub const FLOOR_CONNECTIONS_PER_S: u64 = 10;
/// See [`FLOOR_CONNECTIONS_PER_S`].
pub const FLOOR_REQUESTS_PER_S: u64 = 50;

/// Judges one second of merged samples.
pub(super) fn judge(
    sample: &Sample,
    servers: &mut FxHashSet<Target>,
    settings: &Settings,
    episodes: &mut Episodes,
    out: &mut impl FnMut(Alert),
) {
    let mut targets: Vec<(&Target, &TargetCounts)> = sample.targets.iter().collect();
    targets.sort_unstable_by_key(|(t, _)| **t);
    for (target, counts) in targets {
        if counts.modbus && !servers.contains(target) && servers.len() < MAX_SERVERS {
            servers.insert(*target);
        }
        if !counts.modbus && !servers.contains(target) {
            // Not (yet) known to serve Modbus: a web server's connections are not ours.
            continue;
        }
        let baseline = settings.baseline(target.ip);
        let half_open = counts.attempts.saturating_sub(counts.completed);
        let syn_limit = limit(settings, &rule::SYN_FLOOD, baseline.connections, SYN_PER_S);
        let conn_limit = limit(
            settings,
            &rule::CONNECTION_FLOOD,
            baseline.connections,
            CONNECTIONS_PER_S,
        );
        let mut found: Vec<(&'static RuleMeta, u64, String)> = Vec::new();
        if counts.attempts >= syn_limit && half_open * 2 >= counts.attempts {
            let what = format!(
                "{} connection attempts in one second to {}:{} (limit {syn_limit}/s), {}% never completed",
                counts.attempts,
                target.ip,
                target.port,
                half_open * 100 / counts.attempts.max(1)
            );
            found.push((&rule::SYN_FLOOD, counts.attempts, what));
        } else if counts.attempts >= conn_limit && half_open * 2 < counts.attempts {
            let what = format!(
                "{} connections in one second to {}:{} (limit {conn_limit}/s)",
                counts.attempts, target.ip, target.port
            );
            found.push((&rule::CONNECTION_FLOOD, counts.attempts, what));
        }
        let req_limit = limit(
            settings,
            &rule::DISTRIBUTED_FLOOD,
            baseline.requests,
            REQUESTS_PER_S,
        );
        if counts.requests >= req_limit && counts.sources.estimate() >= MIN_SOURCES {
            let what = format!(
                "{} requests in one second to {}:{} (limit {req_limit}/s)",
                counts.requests, target.ip, target.port
            );
            found.push((&rule::DISTRIBUTED_FLOOD, counts.requests, what));
        }
        for (meta, count, what) in found {
            raise(meta, target, counts, count, what, settings, episodes, out);
        }
    }
}

/// The limit per second of `rule` for a server with baseline `per_s` (per second, if the
/// policy gives one).
fn limit(settings: &Settings, rule: &RuleMeta, per_s: Option<f64>, default: u64) -> u64 {
    let floor = if rule.id == rule::DISTRIBUTED_FLOOD.id {
        FLOOR_REQUESTS_PER_S
    } else {
        FLOOR_CONNECTIONS_PER_S
    };
    match (per_s, settings.threshold(rule)) {
        (Some(per_s), _) => ((per_s * BASELINE_FACTOR as f64).ceil() as u64).max(floor),
        (None, Some(threshold)) => u64::from(threshold).max(1),
        (None, None) => default,
    }
}

#[allow(clippy::too_many_arguments)]
fn raise(
    meta: &'static RuleMeta,
    target: &Target,
    counts: &TargetCounts,
    count: u64,
    what: String,
    settings: &Settings,
    episodes: &mut Episodes,
    out: &mut impl FnMut(Alert),
) {
    let Some(tuned) = settings.rule(meta) else {
        return;
    };
    let sources = counts.sources.estimate();
    let single = counts
        .sources
        .exact()
        .filter(|e| e.len() == 1)
        .and_then(|e| e.first().copied());
    if tuned.suppressed(target.ip) || single.is_some_and(|s| tuned.suppressed(s)) {
        return;
    }
    let mut message = what;
    let _ = write!(
        message,
        "; {} source{}",
        if counts.sources.exact().is_some() {
            sources.to_string()
        } else {
            format!("about {sources}")
        },
        if sources == 1 { "" } else { "s" }
    );
    // Sources of which one each is known (spoofed ones) say nothing worth the room.
    let top: Vec<(IpAddr, u64)> = counts
        .top
        .sorted()
        .into_iter()
        .filter(|e| e.1 > 1)
        .collect();
    if !top.is_empty() {
        message.push_str("; top sources, at least: ");
        for (i, (ip, n)) in top.iter().take(5).enumerate() {
            if i > 0 {
                message.push_str(", ");
            }
            let _ = write!(message, "{ip} ({n})");
        }
    }
    // Many sources have no one address: the alert names the unspecified one.
    let src = single.unwrap_or(match target.ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let occurrence = Occurrence {
        rule: meta,
        severity: tuned.severity,
        first: counts.first,
        last: counts.last,
        src: (src, 0),
        dst: (target.ip, target.port),
        count,
        message,
    };
    episodes.add(
        (meta.id, target.vlan, target.ip, target.port, [0; 6]),
        occurrence,
        tuned.window,
        settings.agent(),
        out,
    );
}
