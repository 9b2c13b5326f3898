//! Querying alerts: filters, newest first, with a cursor for the next page.
//!
//! A query reads one ordered source: the postings of its most selective filter (rule, agent,
//! technique, asset), the severity postings at or above its minimum merged by time, or the time
//! order itself; the remaining filters are checked on each alert. Every query considers at
//! most [`MAX_SCAN`] alerts and hands back a cursor where it stopped; besides those, a query
//! with an upper bound (`until` or a cursor) rereads the postings keyed up to one second past
//! it.
//!
//! Postings overlap in time (each covers one batch's alerts of one value within
//! [`keys::POSTING_SPAN_NANOS`], keyed by the newest), so a source hands out its newest pending
//! alert only once no unread posting can list a newer one.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::Bound;

use otwatch_rules::alert::{Alert, Severity};
use otwatch_rules::time::Timestamp;
use serde::Serialize;

use super::keys::{self, Field};
use super::model::Incident;
use super::{Store, StoreError, corrupt};
use crate::kv::{Kv, Order};

/// Alert keys read per page from the time order.
const PAGE: usize = 256;
/// Postings read per page from an index (each lists up to a batch's alerts).
const POSTINGS_PAGE: usize = 8;
/// Most alerts one query considers before returning a cursor.
const MAX_SCAN: usize = 20_000;
/// Most queries one page of an incident's alerts makes.
const INCIDENT_PAGES: usize = 8;

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
    /// Between `asset` and this host, either way (taken only with `asset`).
    pub peer: Option<IpAddr>,
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
            && self.peer.is_none_or(|p| {
                self.asset.is_some_and(|h| {
                    (a.src_ip == h && a.dst_ip == p) || (a.src_ip == p && a.dst_ip == h)
                })
            })
            && self.rule.as_ref().is_none_or(|r| &a.rule == r)
            && self
                .technique
                .as_ref()
                .is_none_or(|t| a.technique.contains(t))
    }

    /// The key prefixes to read, in merged time order, and whether they hold postings (or
    /// alerts themselves).
    fn sources(&self) -> (Vec<Vec<u8>>, bool) {
        let prefixes = self.index_prefixes();
        if prefixes.is_empty() {
            (vec![vec![keys::ALERT]], false)
        } else {
            (prefixes, true)
        }
    }

    /// The index prefixes to read, none if no filter has an index.
    fn index_prefixes(&self) -> Vec<Vec<u8>> {
        if let Some(r) = &self.rule {
            vec![keys::index_prefix(Field::Rule, r.as_bytes())]
        } else if let Some(g) = &self.agent {
            vec![keys::index_prefix(Field::Agent, g.as_bytes())]
        } else if let Some(t) = &self.technique {
            vec![keys::index_prefix(Field::Technique, t.as_bytes())]
        } else if let Some(h) = &self.asset {
            vec![keys::index_prefix(Field::Asset, h.to_string().as_bytes())]
        } else if let Some(min) = self.min_severity {
            Severity::ALL
                .into_iter()
                .filter(|s| *s >= min)
                .map(|s| keys::index_prefix(Field::Severity, &[s as u8]))
                .collect()
        } else {
            Vec::new()
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

/// One source being read backwards in time: the alerts' time order (each key one alert) or one
/// index value's postings (each key lists several).
struct Source {
    prefix: Vec<u8>,
    postings: bool,
    /// Alerts read, in the query's range and not yet handed out.
    pending: BTreeSet<[u8; 24]>,
    /// Keys below this (by their time-and-id suffix) are still to read.
    below: [u8; 24],
    done: bool,
}

impl Source {
    fn new(prefix: Vec<u8>, postings: bool, start: &[u8; 24]) -> Self {
        // A posting keyed after `start` may still list alerts before it, up to the span.
        let below = if postings {
            keys::time_of(start)
                .checked_add(keys::POSTING_SPAN_NANOS + 1)
                .map_or([0xff; 24], |t| keys::order(t, &[0; 16]))
        } else {
            *start
        };
        Self {
            prefix,
            postings,
            pending: BTreeSet::new(),
            below,
            done: false,
        }
    }

    /// The newest alert left in this source, once no unread key can list a newer one.
    fn head<K: Kv>(
        &mut self,
        kv: &K,
        floor: &[u8; 24],
        start: &[u8; 24],
    ) -> Result<Option<[u8; 24]>, StoreError> {
        loop {
            match self.pending.last() {
                Some(h) if self.done || *h >= self.below => return Ok(Some(*h)),
                None if self.done => return Ok(None),
                _ => self.refill(kv, floor, start)?,
            }
        }
    }

    /// Reads the next page of keys, keeping the alerts in `[floor, start)`.
    fn refill<K: Kv>(
        &mut self,
        kv: &K,
        floor: &[u8; 24],
        start: &[u8; 24],
    ) -> Result<(), StoreError> {
        let mut lo = self.prefix.clone();
        lo.extend_from_slice(floor);
        let mut hi = self.prefix.clone();
        hi.extend_from_slice(&self.below);
        let page_size = if self.postings { POSTINGS_PAGE } else { PAGE };
        let page = kv.range(
            Bound::Included(lo.as_slice()),
            Bound::Excluded(hi.as_slice()),
            Order::Descending,
            page_size,
        )?;
        self.done = page.len() < page_size;
        let in_range = |e: &[u8; 24]| e >= floor && e < start;
        let mut own = false;
        for (k, v) in &page {
            // Index keys are prefix-free, so every key in the range is this source's own; the
            // position to resume from is only ever taken from one that is.
            let Some(newest) = k
                .strip_prefix(self.prefix.as_slice())
                .and_then(|rest| <[u8; 24]>::try_from(rest).ok())
            else {
                continue;
            };
            own = true;
            self.below = newest;
            if self.postings {
                self.pending
                    .extend(keys::posting_entries(v).filter(|e| in_range(e)));
            } else if in_range(&newest) {
                self.pending.insert(newest);
            }
        }
        // A page with no key of this source's could only be read again: nothing is left.
        self.done |= !own;
        Ok(())
    }
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
        let (prefixes, postings) = filter.sources();
        let mut sources: Vec<Source> = prefixes
            .into_iter()
            .map(|prefix| Source::new(prefix, postings, &start))
            .collect();
        let mut alerts = Vec::new();
        let mut scanned = 0;
        loop {
            // The next candidates, newest first, as many as could still be needed: read at once
            // (one round trip to a database), then judged in order.
            let want = limit
                .saturating_sub(alerts.len())
                .clamp(1, 256)
                .min(MAX_SCAN.saturating_sub(scanned).max(1));
            let mut candidates: Vec<[u8; 24]> = Vec::with_capacity(want);
            while candidates.len() < want {
                // The newest head among the sources.
                let mut best: Option<(usize, [u8; 24])> = None;
                for (i, s) in sources.iter_mut().enumerate() {
                    if let Some(h) = s.head(&self.kv, &floor, &start)?
                        && best.is_none_or(|(_, b)| h > b)
                    {
                        best = Some((i, h));
                    }
                }
                let Some((i, suffix)) = best else {
                    break;
                };
                if let Some(s) = sources.get_mut(i) {
                    s.pending.remove(&suffix);
                }
                candidates.push(suffix);
            }
            let exhausted = candidates.len() < want;
            let keys: Vec<Vec<u8>> = candidates.iter().map(keys::alert).collect();
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            for (suffix, value) in candidates.iter().zip(self.kv.get_many(&refs)?) {
                scanned += 1;
                if let Some(v) = value {
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
            if exhausted {
                return Ok(AlertPage { alerts, next: None });
            }
        }
    }

    /// Up to `limit` alerts of an incident, newest first, older than `cursor` if given: the
    /// alerts of its rule from its source to its destination within its time span. Incidents
    /// of one rule and pair follow one another, so these are its own, but for alerts that
    /// arrived late within an hour of a later incident's start, which show on both.
    pub fn incident_alerts(
        &self,
        incident: &Incident,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<AlertPage, StoreError> {
        let filter = AlertFilter {
            since: Some(incident.first_ts),
            until: Some(Timestamp::from_nanos(
                incident.last_ts.as_nanos().saturating_add(1),
            )),
            asset: Some(incident.src_ip),
            peer: Some(incident.dst_ip),
            rule: Some(incident.rule.clone()),
            ..AlertFilter::default()
        };
        let mut alerts = Vec::new();
        let mut cursor = cursor.map(str::to_string);
        // The pair's alerts the other way are passed over: a few pages per request at most,
        // then the cursor says where to go on.
        for _ in 0..INCIDENT_PAGES {
            let page = self.query_alerts(&filter, cursor.as_deref(), limit - alerts.len())?;
            alerts.extend(
                page.alerts
                    .into_iter()
                    .filter(|a| a.src_ip == incident.src_ip && a.dst_ip == incident.dst_ip),
            );
            cursor = page.next;
            if alerts.len() >= limit || cursor.is_none() {
                break;
            }
        }
        Ok(AlertPage {
            alerts,
            next: cursor,
        })
    }
}
