//! The machine driven against a model outbox and scripted collectors, on a manual clock: every
//! refusal, set-aside, split and failover rule of delivery, in microseconds.

use std::collections::BTreeMap;

use super::*;

/// Sequence numbers per lane in the model outbox.
const LANE_SEQS: u64 = 1_000_000;

/// A record in the model outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rec {
    /// A record any collector takes.
    Good,
    /// One the collector will never take from this agent (422).
    Invalid,
    /// One the collector cannot read (400).
    Unreadable,
    /// One this build cannot read (left by another version): skipped, never sent.
    Foreign,
}

/// What a collector does with a batch.
type Collector = Box<dyn FnMut(&[Rec]) -> Result<u64, Failure>>;

/// A collector that takes good records and refuses the others as the real one does.
fn honest() -> Collector {
    Box::new(|batch: &[Rec]| {
        if batch.contains(&Rec::Invalid) {
            return Err(Failure::Invalid(
                "alerts[0].agent: another agent's name".into(),
            ));
        }
        if batch.contains(&Rec::Unreadable) {
            return Err(Failure::Unreadable(
                "alerts[0].schema: unknown version".into(),
            ));
        }
        Ok(0)
    })
}

fn unreachable() -> Collector {
    Box::new(|_: &[Rec]| Err(Failure::Unreachable("connection refused".into())))
}

/// The machine, a model outbox, collectors, and what reached each.
struct Sim {
    machine: Machine,
    now: Duration,
    /// The model outbox, one queue per lane. Lane `l` numbers its records from
    /// `l * LANE_SEQS + 1`, without gaps, so sequence numbers name one record across lanes.
    lanes: Vec<BTreeMap<u64, Rec>>,
    next_seq: Vec<u64>,
    collectors: Vec<Collector>,
    /// Records each collector took, in order.
    taken: Vec<Vec<u64>>,
    heartbeats: Vec<usize>,
    events: Vec<Event>,
    /// Makes the next removal fail.
    fail_removal: bool,
}

impl Sim {
    fn new(collectors: Vec<Collector>) -> Self {
        let config = Config {
            batch_records: 8,
            collectors: collectors.len(),
            ..Config::default()
        };
        Self::with(config, collectors)
    }

    fn with(config: Config, collectors: Vec<Collector>) -> Self {
        Self {
            machine: Machine::new(config, 7),
            now: Duration::ZERO,
            lanes: vec![BTreeMap::new(); Lane::COUNT],
            next_seq: (0..Lane::COUNT as u64).map(|l| l * LANE_SEQS + 1).collect(),
            taken: vec![Vec::new(); collectors.len()],
            collectors,
            heartbeats: Vec::new(),
            events: Vec::new(),
            fail_removal: false,
        }
    }

    /// Adds alerts.
    fn push(&mut self, records: &[Rec]) {
        self.push_to(Lane::Alerts, records);
    }

    fn push_to(&mut self, lane: Lane, records: &[Rec]) {
        let l = lane.index();
        for r in records {
            self.lanes[l].insert(self.next_seq[l], *r);
            self.next_seq[l] += 1;
        }
        self.machine.handle_nudge();
    }

    /// The alerts lane.
    fn outbox(&mut self) -> &mut BTreeMap<u64, Rec> {
        &mut self.lanes[Lane::Alerts.index()]
    }

    fn all_empty(&self) -> bool {
        self.lanes.iter().all(BTreeMap::is_empty)
    }

    /// One poll and what the driver does for it; returns the poll.
    fn step(&mut self) -> Poll {
        let poll = self.machine.poll(self.now);
        match poll.clone() {
            Poll::Heartbeat { collector } => {
                self.heartbeats.push(collector);
                let outcome = (self.collectors[collector])(&[]).map(|_| ());
                self.machine.handle_heartbeat(self.now, outcome);
            }
            Poll::Batch {
                collector,
                lane,
                records,
                bytes: _,
            } => {
                let head: Vec<(u64, Rec)> = self.lanes[lane.index()]
                    .iter()
                    .map(|(s, r)| (*s, *r))
                    .scan(0, |readable, (s, r)| {
                        if *readable >= records {
                            return None;
                        }
                        if r != Rec::Foreign {
                            *readable += 1;
                        }
                        Some((s, r))
                    })
                    .collect();
                let Some(&(through, _)) = head.last() else {
                    self.machine.handle_empty(self.now, lane);
                    return poll;
                };
                let sent: Vec<(u64, Rec)> = head
                    .iter()
                    .copied()
                    .filter(|(_, r)| *r != Rec::Foreign)
                    .collect();
                let batch: Vec<Rec> = sent.iter().map(|(_, r)| *r).collect();
                let outcome = (self.collectors[collector])(&batch);
                if outcome.is_ok() {
                    self.taken[collector].extend(sent.iter().map(|(s, _)| *s));
                }
                let info = Sent {
                    lane,
                    oldest: sent.first().map(|(s, _)| *s),
                    through,
                    records: sent.len(),
                    unreadable: (head.len() - sent.len()) as u64,
                };
                self.machine.handle_batch(self.now, info, outcome);
            }
            Poll::Probe {
                collector,
                lane,
                oldest,
            } => {
                let mut head = self.lanes[lane.index()]
                    .iter()
                    .filter(|(_, r)| **r != Rec::Foreign);
                match (head.next(), head.next()) {
                    (Some((&first, _)), _) if first != oldest => {
                        self.machine.handle_probe_missing(self.now, true)
                    }
                    (None, _) => self.machine.handle_probe_missing(self.now, true),
                    (Some(_), None) => self.machine.handle_probe_missing(self.now, false),
                    (Some(_), Some((&next, &rec))) => {
                        let outcome = (self.collectors[collector])(&[rec]);
                        if outcome.is_ok() {
                            self.taken[collector].push(next);
                        }
                        self.machine.handle_probe(self.now, next, outcome);
                    }
                }
            }
            Poll::Remove { lane, through } => {
                if self.fail_removal {
                    self.fail_removal = false;
                    self.machine
                        .handle_removed(self.now, Err("disk full".into()));
                } else {
                    self.lanes[lane.index()].retain(|s, _| *s > through);
                    self.machine.handle_removed(self.now, Ok(()));
                }
            }
            Poll::Wait { until, .. } => self.now = until,
        }
        while let Some(e) = self.machine.poll_event() {
            self.events.push(e);
        }
        poll
    }

    /// Steps until the outbox is empty and the machine idle, or `limit` steps.
    fn run(&mut self, limit: usize) {
        for _ in 0..limit {
            if self.all_empty() && matches!(self.machine.state, State::Idle { .. }) {
                return;
            }
            self.step();
        }
    }

    fn set_aside(&self) -> u64 {
        self.events
            .iter()
            .map(|e| match e {
                Event::SetAside { count, .. } => *count,
                _ => 0,
            })
            .sum()
    }
}

#[test]
fn records_go_in_batches_leave_the_outbox_once_taken_and_drops_are_then_reported() {
    let mut sim = Sim::new(vec![honest()]);
    sim.push(&[Rec::Good; 20]);
    sim.run(100);
    assert_eq!(sim.taken[0], (1..=20).collect::<Vec<_>>());
    assert!(sim.outbox().is_empty());
    let d = sim.machine.delivered();
    assert_eq!((d.records, d.batches, d.rejected), (20, 3, 0));
    assert!(d.connected);
    assert!(sim.events.contains(&Event::ReportDrops));
}

#[test]
fn the_first_heartbeat_goes_at_once_then_one_every_interval_even_while_backing_off() {
    let mut sim = Sim::new(vec![unreachable()]);
    assert_eq!(sim.step(), Poll::Heartbeat { collector: 0 });
    sim.push(&[Rec::Good]);
    while sim.now < Duration::from_secs(60) {
        sim.step();
    }
    // 0 s, then every 5 s: 12 in the first minute, whatever the backoff does.
    assert_eq!(sim.heartbeats.len(), 12);
    assert!(!sim.machine.delivered().connected);
    assert_eq!(
        sim.outbox().len(),
        1,
        "nothing is removed while unreachable"
    );
}

#[test]
fn failures_back_off_exponentially_and_new_records_do_not_cut_the_wait_short() {
    let mut sim = Sim::new(vec![unreachable()]);
    sim.step(); // heartbeat
    sim.push(&[Rec::Good]);
    sim.step(); // batch, fails
    let Poll::Wait { until, nudge_wakes } = sim.machine.poll(sim.now) else {
        panic!("expected a wait");
    };
    assert!(!nudge_wakes);
    assert!(until >= Duration::from_millis(250) && until <= Duration::from_millis(500));
    sim.push(&[Rec::Good]);
    assert!(matches!(sim.machine.poll(sim.now), Poll::Wait { .. }));
    let mut waits = Vec::new();
    let mut last = sim.now;
    while sim.now < Duration::from_secs(600) {
        if let Poll::Batch { .. } = sim.step() {
            waits.push(sim.now - last);
            last = sim.now;
        }
    }
    assert!(
        waits.iter().all(|w| *w <= Duration::from_secs(60)),
        "{waits:?}"
    );
    assert!(
        waits.iter().any(|w| *w >= Duration::from_secs(30)),
        "{waits:?}"
    );
    assert_eq!(sim.machine.delivered().failures, waits.len() as u64 + 1);
}

#[test]
fn an_empty_outbox_is_looked_at_again_soon_and_at_once_when_records_arrive() {
    let mut sim = Sim::new(vec![honest()]);
    sim.step(); // heartbeat
    sim.step(); // alerts: empty
    sim.step(); // observations: empty
    sim.step(); // evidence: empty
    sim.step(); // learned: empty
    assert_eq!(
        sim.machine.poll(sim.now),
        Poll::Wait {
            until: Duration::from_millis(200),
            nudge_wakes: true
        }
    );
    sim.push(&[Rec::Good]);
    assert!(matches!(sim.machine.poll(sim.now), Poll::Batch { .. }));
}

#[test]
fn a_batch_too_large_is_halved_until_it_passes_and_the_limit_then_restored() {
    let mut sim = Sim::new(vec![Box::new(|batch: &[Rec]| {
        if batch.len() > 2 {
            Err(Failure::TooLarge("body over 1 KiB".into()))
        } else {
            Ok(0)
        }
    })]);
    sim.push(&[Rec::Good; 8]);
    sim.step(); // heartbeat
    sim.step(); // 8: too large
    assert_eq!(sim.machine.batch_limit(Lane::Alerts), 4);
    sim.step(); // 4: too large
    assert_eq!(sim.machine.batch_limit(Lane::Alerts), 2);
    sim.step(); // 2: taken
    sim.step(); // removed
    assert_eq!(sim.machine.batch_limit(Lane::Alerts), 8);
    assert_eq!(sim.machine.delivered().failures, 0);
    sim.run(100);
    assert_eq!(sim.taken[0].len(), 8);
}

#[test]
fn a_record_refused_for_good_is_found_by_halving_and_set_aside_alone() {
    let mut sim = Sim::new(vec![honest()]);
    let mut records = [Rec::Good; 8];
    records[5] = Rec::Invalid;
    sim.push(&records);
    sim.run(200);
    assert_eq!(sim.taken[0], vec![1, 2, 3, 4, 5, 7, 8]);
    assert_eq!(sim.set_aside(), 1);
    assert_eq!(sim.machine.delivered().rejected, 1);
    assert!(sim.outbox().is_empty());
}

#[test]
fn records_refused_for_good_are_all_set_aside_however_many_in_a_row() {
    let mut sim = Sim::new(vec![honest()]);
    let mut records = vec![Rec::Invalid; 30];
    records.push(Rec::Good);
    sim.push(&records);
    sim.run(1000);
    assert_eq!(sim.taken[0], vec![31]);
    assert_eq!(sim.set_aside(), 30);
}

#[test]
fn a_record_the_collector_cannot_read_is_set_aside_once_it_takes_the_next() {
    let mut sim = Sim::new(vec![honest()]);
    sim.push(&[
        Rec::Good,
        Rec::Unreadable,
        Rec::Foreign,
        Rec::Good,
        Rec::Good,
    ]);
    sim.run(200);
    // The unreadable record and the foreign one after it are set aside; the record after
    // them went alone, as the probe.
    assert_eq!(sim.taken[0], vec![1, 4, 5]);
    assert_eq!(sim.set_aside(), 2);
    assert!(sim.outbox().is_empty());
}

#[test]
fn a_collector_that_refuses_every_record_gets_them_all_kept_not_set_aside_one_by_one() {
    let mut sim = Sim::new(vec![Box::new(|batch: &[Rec]| {
        if batch.is_empty() {
            Ok(0)
        } else {
            Err(Failure::Unreadable("unknown schema version 9".into()))
        }
    })]);
    sim.push(&[Rec::Good; 5]);
    while sim.now < Duration::from_secs(300) {
        sim.step();
    }
    assert_eq!(sim.outbox().len(), 5);
    assert_eq!(sim.set_aside(), 0);
    let d = sim.machine.delivered();
    assert!(d.connected && d.failures > 3, "{d:?}");
    assert!(sim.events.iter().any(
        |e| matches!(e, Event::Error(m) if m.contains("refuses every record") && m.contains("older"))
    ));
}

#[test]
fn a_refused_record_with_nothing_after_it_is_kept() {
    let mut sim = Sim::new(vec![honest()]);
    sim.push(&[Rec::Unreadable]);
    while sim.now < Duration::from_secs(30) {
        sim.step();
    }
    assert_eq!(sim.outbox().len(), 1);
    assert!(sim.events.iter().any(
        |e| matches!(e, Event::Error(m) if m.contains("kept until the collector takes a record after it"))
    ));
    // A record arrives behind it: the refused one goes, the new one is delivered.
    sim.push(&[Rec::Good]);
    sim.now += Duration::from_secs(120);
    sim.run(100);
    assert_eq!(sim.taken[0], vec![2]);
    assert_eq!(sim.set_aside(), 1);
}

#[test]
fn a_probe_whose_refused_record_the_outbox_dropped_meanwhile_starts_afresh() {
    let mut sim = Sim::new(vec![honest()]);
    sim.push(&[Rec::Unreadable, Rec::Good]);
    sim.step(); // heartbeat
    sim.machine.batch_limit[0] = 1;
    sim.step(); // [Unreadable] refused alone: probing
    assert!(matches!(
        sim.machine.poll(sim.now),
        Poll::Probe { oldest: 1, .. }
    ));
    sim.outbox().remove(&1); // the outbox dropped it for room
    sim.step();
    assert!(matches!(sim.machine.poll(sim.now), Poll::Batch { .. }));
    sim.run(100);
    assert_eq!(sim.taken[0], vec![2]);
    assert_eq!(sim.set_aside(), 0);
}

#[test]
fn a_wrong_credential_keeps_everything_and_says_why() {
    let mut sim = Sim::new(vec![Box::new(|_: &[Rec]| {
        Err(Failure::Refused {
            status: 401,
            message: "unknown token".into(),
        })
    })]);
    sim.push(&[Rec::Good; 3]);
    while sim.now < Duration::from_secs(30) {
        sim.step();
    }
    assert_eq!(sim.outbox().len(), 3);
    assert!(sim.events.iter().any(
        |e| matches!(e, Event::Error(m) if m == "collector refused the request (401): unknown token")
    ));
}

#[test]
fn a_failed_removal_keeps_the_records_and_counts_nothing_and_they_go_again() {
    let mut sim = Sim::new(vec![honest()]);
    sim.push(&[Rec::Good; 2]);
    sim.fail_removal = true;
    sim.run(100);
    assert!(sim.events.contains(&Event::StoreError("disk full".into())));
    assert_eq!(
        sim.taken[0],
        vec![1, 2, 1, 2],
        "sent again: the collector dedupes"
    );
    assert_eq!(sim.machine.delivered().batches, 1);
}

#[test]
fn unreadable_records_within_a_taken_batch_are_counted_as_set_aside() {
    let mut sim = Sim::new(vec![honest()]);
    sim.push(&[Rec::Good, Rec::Foreign, Rec::Good]);
    sim.run(100);
    assert_eq!(sim.taken[0], vec![1, 3]);
    assert_eq!(sim.machine.delivered().rejected, 1);
    assert!(sim.events.iter().any(
        |e| matches!(e, Event::SetAside { count: 1, why } if why.starts_with("1 outbox records"))
    ));
}

#[test]
fn an_unreachable_collector_is_skipped_for_the_next_at_once_and_the_next_kept() {
    let mut sim = Sim::new(vec![unreachable(), honest(), honest()]);
    sim.push(&[Rec::Good; 3]);
    sim.step(); // heartbeat to 0
    sim.step(); // batch to 0: unreachable
    assert!(matches!(
        sim.machine.poll(sim.now),
        Poll::Batch { collector: 1, .. }
    ));
    sim.run(100);
    assert_eq!(sim.taken[1], vec![1, 2, 3]);
    sim.push(&[Rec::Good]);
    sim.run(100);
    assert_eq!(
        sim.taken[1],
        vec![1, 2, 3, 4],
        "stays with the collector that answers"
    );
    assert_eq!(
        sim.now,
        Duration::ZERO,
        "no backoff while another collector answers"
    );
}

#[test]
fn when_every_collector_is_unreachable_the_machine_backs_off_then_tries_them_again() {
    let mut sim = Sim::new(vec![unreachable(), unreachable()]);
    sim.push(&[Rec::Good]);
    sim.step(); // heartbeat to 0 fails: the next goes to 1 at once
    sim.step(); // and fails too: back to 0, heartbeats at their interval again
    assert_eq!(sim.heartbeats, vec![0, 1]);
    sim.step(); // the batch to 0 fails: on to 1
    assert!(matches!(
        sim.machine.poll(sim.now),
        Poll::Batch { collector: 1, .. }
    ));
    sim.step(); // 1 fails: back off
    assert!(matches!(
        sim.machine.poll(sim.now),
        Poll::Wait {
            nudge_wakes: false,
            ..
        }
    ));
    assert_eq!(sim.machine.delivered().failures, 2);
}

#[test]
fn a_busy_collector_is_left_alone_for_as_long_as_it_asks() {
    let mut sim = Sim::new(vec![Box::new(|batch: &[Rec]| {
        if batch.is_empty() {
            Ok(0)
        } else {
            Err(Failure::Busy {
                retry_after: Some(Duration::from_secs(7)),
                message: "slow down".into(),
            })
        }
    })]);
    sim.push(&[Rec::Good]);
    sim.step(); // heartbeat
    sim.step(); // busy
    assert!(
        !sim.machine.delivered().connected,
        "a busy collector took nothing"
    );
    assert!(matches!(
        sim.machine.poll(sim.now),
        Poll::Wait { until, nudge_wakes: false } if until == Duration::from_secs(5)
    ));
    assert_eq!(sim.machine.poll_timeout(), Duration::from_secs(5));
    sim.now = Duration::from_secs(5);
    sim.step(); // heartbeat at 5 s
    assert!(matches!(
        sim.machine.poll(sim.now),
        Poll::Wait { until, .. } if until == Duration::from_secs(7)
    ));
}

#[test]
fn agents_told_to_come_back_in_a_second_come_back_spread_and_not_sooner() {
    let mut comebacks = std::collections::BTreeSet::new();
    for seed in 0..10 {
        let busy: Collector = Box::new(|batch: &[Rec]| {
            if batch.is_empty() {
                Ok(0)
            } else {
                Err(Failure::Busy {
                    retry_after: Some(Duration::from_secs(1)),
                    message: "slow down".into(),
                })
            }
        });
        let config = Config {
            backoff_min: Duration::from_secs(2),
            ..Config::default()
        };
        let mut sim = Sim::with(config.clone(), vec![busy]);
        sim.machine = Machine::new(config, seed);
        sim.push(&[Rec::Good]);
        sim.step(); // heartbeat
        sim.step(); // busy
        let State::Backoff { until } = sim.machine.state else {
            panic!("expected a backoff");
        };
        assert!(until >= Duration::from_secs(1), "{until:?}");
        comebacks.insert(until);
    }
    assert!(
        comebacks.len() > 5,
        "every agent came back at once: {comebacks:?}"
    );
}

#[test]
fn a_heartbeat_as_slow_as_its_interval_still_leaves_room_for_batches() {
    let mut sim = Sim::new(vec![honest()]);
    sim.push(&[Rec::Good; 3]);
    for _ in 0..3 {
        assert_eq!(sim.machine.poll(sim.now), Poll::Heartbeat { collector: 0 });
        // The heartbeat takes the whole interval (a collector that times out).
        sim.now += Duration::from_secs(5);
        sim.machine.handle_heartbeat(sim.now, Ok(()));
        assert!(
            matches!(sim.machine.poll(sim.now), Poll::Batch { .. }),
            "a batch goes between two slow heartbeats"
        );
        sim.step(); // the batch
        sim.step(); // its removal, or the empty outbox
        sim.now += Duration::from_secs(5);
    }
    assert_eq!(sim.taken[0], vec![1, 2, 3]);
}

#[test]
fn a_busy_collector_asking_for_an_hour_is_tried_again_within_the_longest_backoff() {
    let mut sim = Sim::new(vec![Box::new(|_: &[Rec]| {
        Err(Failure::Busy {
            retry_after: Some(Duration::from_secs(3600)),
            message: "slow down".into(),
        })
    })]);
    sim.push(&[Rec::Good]);
    sim.step(); // heartbeat
    sim.step(); // busy
    assert!(
        matches!(sim.machine.state, State::Backoff { until } if until == Duration::from_secs(60))
    );
}

#[test]
fn alerts_go_before_observations_waiting_longer_and_observations_follow() {
    let mut sim = Sim::new(vec![honest()]);
    sim.push_to(Lane::Observations, &[Rec::Good; 3]);
    sim.push(&[Rec::Good; 10]);
    sim.run(100);
    let obs = LANE_SEQS;
    assert_eq!(
        sim.taken[0],
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, obs + 1, obs + 2, obs + 3],
        "both alert batches first (8 records per batch), then the observations"
    );
    assert!(sim.all_empty());
    assert_eq!(sim.machine.delivered().batches, 3);
}

#[test]
fn alerts_arriving_while_observations_are_sent_go_next() {
    let mut sim = Sim::new(vec![honest()]);
    sim.push_to(Lane::Observations, &[Rec::Good; 20]);
    sim.step(); // heartbeat
    sim.step(); // alerts: empty
    assert!(matches!(
        sim.step(),
        Poll::Batch {
            lane: Lane::Observations,
            ..
        }
    ));
    sim.push(&[Rec::Good]);
    sim.step(); // the observations' removal
    assert!(matches!(
        sim.machine.poll(sim.now),
        Poll::Batch {
            lane: Lane::Alerts,
            ..
        }
    ));
    sim.run(100);
    let obs = LANE_SEQS;
    assert_eq!(
        sim.taken[0][8], 1,
        "the alert went right after the first batch"
    );
    assert_eq!(sim.taken[0][..8], (obs + 1..=obs + 8).collect::<Vec<_>>());
    assert_eq!(sim.taken[0].len(), 21);
}

#[test]
fn an_empty_alerts_lane_is_looked_at_again_after_each_batch_even_without_a_nudge() {
    let mut sim = Sim::new(vec![honest()]);
    sim.push_to(Lane::Observations, &[Rec::Good; 20]);
    sim.step(); // heartbeat
    sim.step(); // alerts: empty
    sim.step(); // observations 1-8
    // An alert lands without a nudge (its writer's nudge raced with the poll).
    sim.lanes[0].insert(1, Rec::Good);
    sim.next_seq[0] = 2;
    sim.step(); // the observations' removal
    assert!(matches!(
        sim.machine.poll(sim.now),
        Poll::Batch {
            lane: Lane::Alerts,
            ..
        }
    ));
}

#[test]
fn a_refusal_in_one_lane_sets_aside_that_lanes_record_and_splits_only_that_lane() {
    let mut sim = Sim::new(vec![Box::new(|batch: &[Rec]| {
        if batch.contains(&Rec::Invalid) {
            return Err(Failure::Invalid("assets[0].ip: not an address".into()));
        }
        Ok(0)
    })]);
    let mut observations = [Rec::Good; 4];
    observations[2] = Rec::Invalid;
    sim.push_to(Lane::Observations, &observations);
    sim.push(&[Rec::Good; 2]);
    sim.step(); // heartbeat
    sim.step(); // the alerts, taken
    sim.step(); // removed
    sim.step(); // alerts: empty
    sim.step(); // observations: refused, halved
    assert_eq!(sim.machine.batch_limit(Lane::Observations), 2);
    assert_eq!(sim.machine.batch_limit(Lane::Alerts), 8);
    sim.run(100);
    let obs = LANE_SEQS;
    assert_eq!(sim.taken[0], vec![1, 2, obs + 1, obs + 2, obs + 4]);
    assert_eq!(sim.set_aside(), 1);
    assert!(sim.all_empty());
}

#[test]
fn a_refused_oldest_observation_is_probed_within_its_own_lane() {
    let mut sim = Sim::new(vec![honest()]);
    sim.push_to(Lane::Observations, &[Rec::Unreadable, Rec::Good]);
    sim.run(100);
    let obs = LANE_SEQS;
    assert_eq!(sim.taken[0], vec![obs + 2]);
    assert_eq!(sim.set_aside(), 1);
    assert!(sim.all_empty());
}

#[test]
fn observations_that_arrive_unannounced_while_idle_are_found_when_the_rest_ends() {
    let mut sim = Sim::new(vec![honest()]);
    sim.step(); // heartbeat
    sim.step(); // alerts: empty
    sim.step(); // observations: empty
    sim.step(); // evidence: empty
    sim.step(); // learned: empty, idle
    assert!(matches!(sim.machine.state, State::Idle { .. }));
    // Written without a nudge: the machine finds them once its rest is over.
    sim.lanes[Lane::Observations.index()].insert(LANE_SEQS + 1, Rec::Good);
    sim.next_seq[Lane::Observations.index()] = LANE_SEQS + 2;
    for _ in 0..10 {
        sim.step();
    }
    assert_eq!(sim.taken[0], vec![LANE_SEQS + 1]);
}

#[test]
fn alerts_written_unannounced_go_even_while_the_collector_refuses_every_observation() {
    let mut sim = Sim::new(vec![Box::new(|batch: &[Rec]| {
        if batch.contains(&Rec::Unreadable) {
            Err(Failure::Unreadable("assets: unknown field".into()))
        } else {
            Ok(0)
        }
    })]);
    sim.push_to(Lane::Observations, &[Rec::Unreadable; 3]);
    while sim.now < Duration::from_secs(5) {
        sim.step();
    }
    assert!(sim.taken[0].is_empty());
    // An alert is written without a nudge, as the agent's producers write.
    sim.lanes[0].insert(1, Rec::Good);
    sim.next_seq[0] = 2;
    while sim.now < Duration::from_secs(120) {
        sim.step();
    }
    assert_eq!(
        sim.taken[0],
        vec![1],
        "the alert went; the observations are kept"
    );
    assert_eq!(sim.lanes[Lane::Observations.index()].len(), 3);
}

#[test]
fn unreadable_records_ahead_of_a_refused_one_are_counted_when_it_is_set_aside() {
    let mut sim = Sim::new(vec![honest()]);
    sim.push(&[Rec::Foreign, Rec::Unreadable, Rec::Good]);
    sim.step(); // heartbeat
    sim.machine.batch_limit[0] = 1;
    sim.run(100);
    assert_eq!(sim.taken[0], vec![3]);
    assert_eq!(sim.set_aside(), 2, "the foreign record and the refused one");
    assert!(sim.outbox().is_empty());
}

/// A collector that is down until `up` is set, then takes everything.
fn down_until(up: &std::rc::Rc<std::cell::Cell<bool>>) -> Collector {
    let up = up.clone();
    Box::new(move |_: &[Rec]| {
        if up.get() {
            Ok(0)
        } else {
            Err(Failure::Unreachable("503: no database".into()))
        }
    })
}

#[test]
fn the_preferred_collector_is_tried_again_after_return_after_and_kept_once_it_answers() {
    let up = std::rc::Rc::new(std::cell::Cell::new(false));
    let config = Config {
        batch_records: 8,
        collectors: 2,
        return_after: Duration::from_secs(30),
        ..Config::default()
    };
    let mut sim = Sim::with(config, vec![down_until(&up), honest()]);
    sim.push(&[Rec::Good; 3]);
    sim.run(100);
    assert_eq!(sim.taken[1], vec![1, 2, 3], "the second took over at once");
    assert_eq!(sim.machine.collector(), 1);
    assert_eq!(sim.machine.delivered().collector, 1);

    // Before the interval: the second keeps everything.
    sim.now += Duration::from_secs(20);
    sim.push(&[Rec::Good]);
    sim.run(100);
    assert_eq!(sim.taken[1], vec![1, 2, 3, 4]);

    // After it, the preferred one is tried; still down, the second takes the batch at once.
    sim.now += Duration::from_secs(15);
    sim.push(&[Rec::Good]);
    sim.run(100);
    assert_eq!(sim.taken[1], vec![1, 2, 3, 4, 5]);
    assert!(sim.taken[0].is_empty());
    assert_eq!(sim.machine.collector(), 1);

    // Back up: after another interval the preferred one gets the next batch, and keeps them.
    up.set(true);
    sim.now += Duration::from_secs(31);
    sim.push(&[Rec::Good]);
    sim.run(100);
    assert_eq!(sim.taken[0], vec![6]);
    sim.push(&[Rec::Good]);
    sim.run(100);
    assert_eq!(
        sim.taken[0],
        vec![6, 7],
        "stays with the preferred collector"
    );
    assert_eq!(sim.machine.delivered().collector, 0);
    let moves: Vec<usize> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Collector(c) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(moves, vec![1, 0, 1, 0], "every move is reported");
    assert_eq!(sim.taken[1].len(), 5, "nothing delivered twice");
}

#[test]
fn an_agent_with_nothing_to_send_moves_its_heartbeats_off_a_failed_collector_and_back() {
    let up = std::rc::Rc::new(std::cell::Cell::new(false));
    let config = Config {
        collectors: 2,
        return_after: Duration::from_secs(30),
        ..Config::default()
    };
    let mut sim = Sim::with(config, vec![down_until(&up), honest()]);
    sim.step(); // heartbeat to 0: down
    assert_eq!(sim.heartbeats, vec![0]);
    sim.step(); // the next heartbeat goes to 1 at once
    assert_eq!(sim.heartbeats, vec![0, 1]);
    assert!(sim.machine.delivered().connected);
    for _ in 0..20 {
        sim.step();
    }
    assert!(
        sim.heartbeats[2..].iter().all(|c| *c == 1),
        "{:?}",
        sim.heartbeats
    );
    // Back up: after return_after the heartbeats go to the preferred one again.
    up.set(true);
    sim.now += Duration::from_secs(31);
    sim.step();
    assert_eq!(sim.heartbeats.last(), Some(&0));
    assert_eq!(sim.machine.collector(), 0);
}

#[test]
fn when_every_collector_is_down_heartbeats_keep_their_interval() {
    let config = Config {
        collectors: 2,
        ..Config::default()
    };
    let mut sim = Sim::with(config, vec![unreachable(), unreachable()]);
    sim.step(); // 0 fails: on to 1 at once
    sim.step(); // 1 fails too: wait for the interval
    assert_eq!(sim.heartbeats, vec![0, 1]);
    while sim.heartbeats.len() < 3 {
        sim.step();
    }
    assert!(
        sim.now >= Config::default().heartbeat_every,
        "the third heartbeat came at {:?}",
        sim.now
    );
}
