//! Folding for network-level alerts: the first second over a limit raises an alert at once;
//! the seconds after it within the rule's window fold into one more alert when the window
//! closes, as [`crate::detect`] folds repeats (a flood of a minute is two alerts, not sixty).

use std::net::IpAddr;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::alert::{Alert, RuleMeta, SCHEMA_VERSION, Severity};
use crate::time::Timestamp;

/// What one second (or one event) over a limit says, ready to become an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Occurrence {
    pub rule: &'static RuleMeta,
    pub severity: Severity,
    pub first: Timestamp,
    pub last: Timestamp,
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    pub count: u64,
    pub message: String,
}

/// What names one episode: the rule and what it is about (a server, or an address and the
/// Ethernet address claiming it).
pub(super) type EpisodeKey = (&'static str, u16, IpAddr, u16, [u8; 6]);

#[derive(Debug)]
struct Episode {
    end: Timestamp,
    folded: Option<Occurrence>,
}

/// Open episodes.
#[derive(Debug, Default)]
pub(super) struct Episodes {
    open: FxHashMap<EpisodeKey, Episode>,
}

/// Most episodes open at once (the oldest close first when full).
const MAX_EPISODES: usize = 16_384;

impl Episodes {
    /// Counts `o` in its episode: a new episode raises it at once.
    pub fn add(
        &mut self,
        key: EpisodeKey,
        o: Occurrence,
        window: Duration,
        agent: &str,
        out: &mut impl FnMut(Alert),
    ) {
        if let Some(e) = self.open.get_mut(&key) {
            if o.first < e.end {
                match &mut e.folded {
                    Some(f) => {
                        f.count += o.count;
                        f.last = f.last.max(o.last);
                        f.message = o.message;
                        f.src = o.src;
                    }
                    None => e.folded = Some(o),
                }
                return;
            }
            if let Some(e) = self.open.remove(&key) {
                close(e, agent, out);
            }
        }
        if self.open.len() >= MAX_EPISODES {
            self.close_oldest(agent, out);
        }
        out(alert(agent, &o, 0));
        self.open.insert(
            key,
            Episode {
                end: o.first.saturating_add(window),
                folded: None,
            },
        );
    }

    /// Closes episodes whose window ended by `now`.
    pub fn flush(&mut self, now: Timestamp, agent: &str, out: &mut impl FnMut(Alert)) {
        let mut due: Vec<EpisodeKey> = self
            .open
            .iter()
            .filter(|(_, e)| e.end <= now)
            .map(|(k, _)| *k)
            .collect();
        due.sort_unstable();
        for key in due {
            if let Some(e) = self.open.remove(&key) {
                close(e, agent, out);
            }
        }
    }

    /// Closes every episode.
    pub fn finish(&mut self, agent: &str, out: &mut impl FnMut(Alert)) {
        let mut all: Vec<(EpisodeKey, Episode)> = self.open.drain().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (_, e) in all {
            close(e, agent, out);
        }
    }

    fn close_oldest(&mut self, agent: &str, out: &mut impl FnMut(Alert)) {
        if let Some(key) = self
            .open
            .iter()
            .min_by_key(|(k, e)| (e.end, **k))
            .map(|(k, _)| *k)
            && let Some(e) = self.open.remove(&key)
        {
            close(e, agent, out);
        }
    }
}

fn close(e: Episode, agent: &str, out: &mut impl FnMut(Alert)) {
    if let Some(f) = e.folded {
        out(alert(agent, &f, 1));
    }
}

/// The alert of `o`, its id derived with `seq` (0 raised at once, 1 for what folded after).
fn alert(agent: &str, o: &Occurrence, seq: u64) -> Alert {
    let rule = o.rule.id;
    Alert {
        schema: SCHEMA_VERSION,
        id: Alert::stable_id(agent, rule, o.src.0, o.dst.0, None, o.first, seq),
        ts: o.last,
        agent: agent.to_string(),
        severity: o.severity,
        rule: rule.to_string(),
        title: o.rule.title.to_string(),
        technique: o.rule.technique.iter().map(|t| t.to_string()).collect(),
        src_ip: o.src.0,
        src_port: o.src.1,
        dst_ip: o.dst.0,
        dst_port: o.dst.1,
        unit_id: None,
        function_code: None,
        function: None,
        address: None,
        quantity: None,
        values: None,
        exception: None,
        count: o.count.max(1),
        first_ts: o.first,
        evidence: None,
        flow: 0,
        message: Some(o.message.clone()),
        seen: None,
    }
}
