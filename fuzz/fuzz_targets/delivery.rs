//! The delivery machine (`otwatch-delivery`) against a hostile collector: every reply an
//! attempt can come to (taken, too large, a record refused for good or unreadable, busy with
//! any `Retry-After`, unreachable, a wrong credential), failed removals, records of both lanes
//! arriving with and without a nudge, records this build cannot read, several collectors. Then
//! an honest collector, which must get everything: nothing waits forever, and every record
//! pushed was either taken or counted as set aside.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use otwatch_delivery::{Config, Event, Failure, Lane, Machine, Poll, Sent};

/// Sequence numbers per lane: lane `l` numbers from `l * LANE_SEQS`, without gaps.
const LANE_SEQS: u64 = 1 << 40;

struct Model {
    /// Per lane: sequence number -> whether this build can read the record.
    lanes: Vec<BTreeMap<u64, bool>>,
    next: Vec<u64>,
    pushed: u64,
    /// Records some collector took.
    taken: BTreeSet<u64>,
    /// Records the machine said it set aside.
    set_aside: u64,
}

impl Model {
    fn push(&mut self, lane: Lane, readable: bool) {
        let l = lane.index();
        self.lanes[l].insert(self.next[l], readable);
        self.next[l] += 1;
        self.pushed += 1;
    }

    fn empty(&self) -> bool {
        self.lanes.iter().all(BTreeMap::is_empty)
    }
}

/// What a collector says to a batch or probe, from one byte (honest: always taken).
fn reply(b: Option<u8>) -> Result<u64, Failure> {
    let Some(b) = b else { return Ok(0) };
    match b % 10 {
        0..=3 => Ok(u64::from(b % 3)),
        4 => Err(Failure::TooLarge("too large".into())),
        5 => Err(Failure::Invalid("alerts[0].rule: invalid".into())),
        6 => Err(Failure::Unreadable("alerts[0].schema: unknown".into())),
        7 => Err(Failure::Busy {
            retry_after: Some(Duration::from_secs(u64::from(b) * 37)),
            message: "busy".into(),
        }),
        8 => Err(Failure::Unreachable("connection refused".into())),
        _ => Err(Failure::Refused {
            status: 401,
            message: "unknown token".into(),
        }),
    }
}

/// One poll and what a driver does for it; `b` is the hostile byte, `None` when honest.
fn step(m: &mut Machine, model: &mut Model, now: &mut Duration, b: Option<u8>) {
    match m.poll(*now) {
        Poll::Heartbeat { .. } => {
            let ok = b.is_none_or(|b| b & 1 == 0);
            let outcome = if ok {
                Ok(())
            } else {
                Err(Failure::Unreachable("timed out".into()))
            };
            m.handle_heartbeat(*now, outcome);
        }
        Poll::Batch {
            collector,
            lane,
            records,
            bytes: _,
        } => {
            assert!(records >= 1, "a batch of no records");
            let _ = collector;
            let mut readable = 0;
            let head: Vec<(u64, bool)> = model.lanes[lane.index()]
                .iter()
                .map(|(s, r)| (*s, *r))
                .take_while(|(_, r)| {
                    let more = readable < records;
                    if *r && more {
                        readable += 1;
                    }
                    more
                })
                .collect();
            let Some(&(through, _)) = head.last() else {
                return m.handle_empty(*now, lane);
            };
            let sent: Vec<u64> = head.iter().filter(|(_, r)| *r).map(|(s, _)| *s).collect();
            let outcome = reply(b);
            if outcome.is_ok() {
                model.taken.extend(&sent);
            }
            let info = Sent {
                lane,
                oldest: sent.first().copied(),
                through,
                records: sent.len(),
                unreadable: (head.len() - sent.len()) as u64,
            };
            m.handle_batch(*now, info, outcome);
        }
        Poll::Probe { lane, oldest, .. } => {
            let mut head = model.lanes[lane.index()].iter().filter(|(_, r)| **r);
            match (head.next(), head.next()) {
                (Some((&first, _)), _) if first != oldest => m.handle_probe_missing(*now, true),
                (None, _) => m.handle_probe_missing(*now, true),
                (Some(_), None) => m.handle_probe_missing(*now, false),
                (Some(_), Some((&next, _))) => {
                    let outcome = reply(b);
                    if outcome.is_ok() {
                        model.taken.insert(next);
                    }
                    m.handle_probe(*now, next, outcome);
                }
            }
        }
        Poll::Remove { lane, through } => {
            if b.is_some_and(|b| b % 13 == 0) {
                m.handle_removed(*now, Err("disk full".into()));
            } else {
                model.lanes[lane.index()].retain(|s, _| *s > through);
                m.handle_removed(*now, Ok(()));
            }
        }
        Poll::Wait { until, .. } => *now = (*now).max(until),
    }
    while let Some(event) = m.poll_event() {
        if let Event::SetAside { count, .. } = event {
            model.set_aside += count;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.iter().copied();
    let first = bytes.next().unwrap_or(0);
    let config = Config {
        batch_records: 1 + usize::from(first % 8),
        collectors: 1 + usize::from(first / 64),
        ..Config::default()
    };
    let mut m = Machine::new(config, u64::from(first));
    let mut now = Duration::ZERO;
    let mut model = Model {
        lanes: vec![BTreeMap::new(); Lane::COUNT],
        next: (0..Lane::COUNT as u64).map(|l| l * LANE_SEQS).collect(),
        pushed: 0,
        taken: BTreeSet::new(),
        set_aside: 0,
    };
    // The hostile part: at most 4,096 steps, records arriving as the input says.
    for b in bytes.by_ref().take(4096) {
        if b & 0x80 != 0 {
            let lane = Lane::ALL[usize::from(b & 1) % Lane::COUNT];
            for i in 0..=(b >> 1) % 4 {
                model.push(lane, (b >> 3) % 7 != 0 || i > 0);
            }
            if b & 0x40 != 0 {
                m.handle_nudge();
            }
        }
        step(&mut m, &mut model, &mut now, Some(b));
    }
    // Then an honest collector: everything goes, in bounded steps and time.
    let started = now;
    for _ in 0..200_000 {
        if model.empty() {
            break;
        }
        step(&mut m, &mut model, &mut now, None);
    }
    assert!(
        model.empty(),
        "records left with an honest collector: {:?}",
        model.lanes.iter().map(BTreeMap::len).collect::<Vec<_>>()
    );
    assert!(
        now - started < Duration::from_secs(3600),
        "an honest collector waited for {:?}",
        now - started
    );
    // Nothing lost: every record pushed was taken or counted as set aside.
    assert!(
        model.pushed <= model.taken.len() as u64 + model.set_aside,
        "pushed {}, taken {}, set aside {}",
        model.pushed,
        model.taken.len(),
        model.set_aside
    );
});
