//! Querying alerts: filters, newest first, with a cursor for the next page.
//!
//! A query reads one ordered source: the index of its most selective filter (rule, agent,
//! technique, asset), the severity indexes at or above its minimum merged by time, or the time
//! order itself; the remaining filters are checked on each alert. Every query reads a bounded
//! number of entries and hands back a cursor where it stopped.

use std::net::IpAddr;
use std::ops::Bound;

use otwatch_rules::alert::{Alert, Severity};
use otwatch_rules::time::Timestamp;
use serde::Serialize;

use super::keys::{self, Field};
use super::{Store, StoreError, corrupt};
use crate::kv::{Kv, Order};

/// Entries read per page from one source.
const PAGE: usize = 256;
/// Most index entries one query reads before returning a cursor.
const MAX_SCAN: usize = 20_000;

/// Which alerts a query wants. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Captured at or after.
    pub since: Option<Timestamp>,
    /// Captured before.
    pub until: Option<Timestamp>,
    /// At least this severe.
    pub min_severity: Option<Severity>,
    /// From this agent.
    pub agent: Option<String>,
    /// With this host as source or destination.
    pub asset: Option<IpAddr>,
    /// Of this rule.
    pub rule: Option<String>,
    /// Naming this technique.
    pub technique: Option<String>,
}

impl AlertFilter {
    /// Whether an alert passes every filter.
    pub fn matches(&self, a: &Alert) -> bool {
        self.since.is_none_or(|t| a.ts >= t)
            && self.until.is_none_or(|t| a.ts < t)
            && self.min_severity.is_none_or(|s| a.severity >= s)
            && self.agent.as_ref().is_none_or(|g| &a.agent == g)
            && self.asset.is_none_or(|h| a.src_ip == h || a.dst_ip == h)
            && self.rule.as_ref().is_none_or(|r| &a.rule == r)
            && self
                .technique
                .as_ref()
                .is_none_or(|t| a.technique.contains(t))
    }

    /// The key prefixes to read, in merged time order.
    fn sources(&self) -> Vec<Vec<u8>> {
        if let Some(r) = &self.rule {
            vec![keys::index_prefix(Field::Rule, r.as_bytes())]
        } else if let Some(g) = &self.agent {
            vec![keys::index_prefix(Field::Agent, g.as_bytes())]
        } else if let Some(t) = &self.technique {
            vec![keys::index_prefix(Field::Technique, t.as_bytes())]
        } else if let Some(h) = &self.asset {
            vec![keys::index_prefix(Field::Asset, h.to_string().as_bytes())]
        } else if let Some(min) = self.min_severity {
            [
                Severity::Info,
                Severity::Low,
                Severity::Medium,
                Severity::High,
                Severity::Critical,
            ]
            .into_iter()
            .filter(|s| *s >= min)
            .map(|s| keys::index_prefix(Field::Severity, &[s as u8]))
            .collect()
        } else {
            vec![vec![keys::ALERT]]
        }
    }
}

/// One page of alerts, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertPage {
    /// The alerts.
    pub alerts: Vec<Alert>,
    /// Pass this as `cursor` for the next page; absent on the last page.
    pub next: Option<String>,
}

/// One source being read backwards in time.
struct Source {
    prefix: Vec<u8>,
    /// Read but not yet consumed, oldest first (the newest is popped from the end).
    buffered: Vec<[u8; 24]>,
    /// Suffixes below this are still to read.
    below: [u8; 24],
    done: bool,
}

impl<K: Kv> Store<K> {
    /// Up to `limit` alerts matching `filter`, newest first, older than `cursor` if given.
    pub fn query_alerts(
        &self,
        filter: &AlertFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<AlertPage, StoreError> {
        let until = filter
            .until
            .map_or([0xff; 24], |t| keys::order(t.as_nanos(), &[0; 16]));
        let start = match cursor {
            Some(c) => {
                let mut bytes = [0u8; 24];
                hex::decode_to_slice(c, &mut bytes).map_err(|_| StoreError::Invalid {
                    field: "cursor".into(),
                    message: format!(
                        "{c:?} is not a cursor (expected the `next` of a previous page)"
                    ),
                })?;
                bytes.min(until)
            }
            None => until,
        };
        let floor = filter
            .since
            .map_or([0; 24], |t| keys::order(t.as_nanos(), &[0; 16]));
        let mut sources: Vec<Source> = filter
            .sources()
            .into_iter()
            .map(|prefix| Source {
                prefix,
                buffered: Vec::new(),
                below: start,
                done: false,
            })
            .collect();
        let mut alerts = Vec::new();
        let mut scanned = 0;
        loop {
            for s in sources
                .iter_mut()
                .filter(|s| s.buffered.is_empty() && !s.done)
            {
                self.refill(s, &floor)?;
            }
            // The newest head among the sources.
            let Some(best) = sources
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.buffered.last().map(|k| (i, *k)))
                .max_by_key(|(_, k)| *k)
            else {
                return Ok(AlertPage { alerts, next: None });
            };
            let (i, suffix) = best;
            if let Some(s) = sources.get_mut(i) {
                s.buffered.pop();
            }
            scanned += 1;
            if let Some(v) = self.kv.get(&keys::alert(&suffix))? {
                let alert: Alert = serde_json::from_slice(&v).map_err(corrupt)?;
                if filter.matches(&alert) {
                    alerts.push(alert);
                }
            }
            if alerts.len() >= limit || scanned >= MAX_SCAN {
                return Ok(AlertPage {
                    alerts,
                    next: Some(hex::encode(suffix)),
                });
            }
        }
    }

    fn refill(&self, s: &mut Source, floor: &[u8; 24]) -> Result<(), StoreError> {
        let mut lo = s.prefix.clone();
        lo.extend_from_slice(floor);
        let mut hi = s.prefix.clone();
        hi.extend_from_slice(&s.below);
        let page = self.kv.range(
            Bound::Included(lo.as_slice()),
            Bound::Excluded(hi.as_slice()),
            Order::Descending,
            PAGE,
        )?;
        s.done = page.len() < PAGE;
        s.buffered = page
            .iter()
            .rev()
            .filter_map(|(k, _)| keys::suffix_of(k))
            .collect();
        if let Some(oldest) = s.buffered.first() {
            s.below = *oldest;
        }
        Ok(())
    }
}
