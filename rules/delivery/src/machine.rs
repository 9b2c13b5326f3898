//! The delivery machine: what to send, when, and what each outcome means for the outbox.
//!
//! Records are sent oldest first, in batches; the collector acknowledges a batch once it is
//! durable, and only then are its records removed from the outbox. Failures back off
//! exponentially with jitter; with several collectors (replicas), one that cannot be reached
//! or fails (timeouts and 5xx included) is skipped for the next before backing off, and the
//! first, the preferred one, is tried again [`Config::return_after`] after it was left. A batch the collector finds too large is halved. A single
//! record it refuses for good (422) is set aside; one it cannot read (400, a newer schema
//! perhaps) is set aside only once the collector has taken the record after it, so one bad
//! record cannot block everything behind it and a collector that refuses every record (an
//! older one than the agent) cannot empty the outbox.
//!
//! The outbox holds one queue per [`Lane`]; every batch comes from the first lane that has
//! records, so alerts go before asset observations, and after each batch the first lanes are
//! looked at again. Refusals, splits and set-asides apply to the lane the batch came from.

use std::collections::VecDeque;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::counters::Delivered;
use crate::failure::Failure;
use crate::lane::Lane;

/// How the machine paces itself.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most records per batch.
    pub batch_records: usize,
    /// Most bytes of records per batch (below the collector's body limit).
    pub batch_bytes: u64,
    /// Time between heartbeats.
    pub heartbeat_every: Duration,
    /// First wait after a failure.
    pub backoff_min: Duration,
    /// Longest wait after repeated failures.
    pub backoff_max: Duration,
    /// How often an empty outbox is looked at again when nobody says records are waiting.
    pub idle_poll: Duration,
    /// Collectors to deliver to, by index: the driver maps an index to an address. One that
    /// cannot be reached is skipped for the next.
    pub collectors: usize,
    /// How long after leaving the first collector (the preferred one) it is tried again.
    pub return_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            batch_records: 500,
            batch_bytes: 2 * 1024 * 1024,
            heartbeat_every: Duration::from_secs(5),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            idle_poll: Duration::from_millis(200),
            collectors: 1,
            return_after: Duration::from_secs(30),
        }
    }
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Send a heartbeat to `collector`, then call [`Machine::handle_heartbeat`].
    Heartbeat {
        /// Which collector.
        collector: usize,
    },
    /// Read the oldest records from the outbox, at most `records` of them and `bytes` of
    /// records, and send them to `collector` as one batch; then call [`Machine::handle_batch`]
    /// ([`Machine::handle_empty`] when there are none, [`Machine::handle_store_error`] when
    /// the outbox fails).
    Batch {
        /// Which collector.
        collector: usize,
        /// Which of the outbox's queues.
        lane: Lane,
        /// Most records.
        records: usize,
        /// Most bytes of records.
        bytes: u64,
    },
    /// The collector refused the oldest record, `oldest`, alone: read the record after it and
    /// send that one alone to `collector`, then call [`Machine::handle_probe`]
    /// ([`Machine::handle_probe_missing`] when the oldest is gone or nothing follows it).
    Probe {
        /// Which collector.
        collector: usize,
        /// Which of the outbox's queues.
        lane: Lane,
        /// The outbox sequence number of the refused record.
        oldest: u64,
    },
    /// Remove the records of `lane` through `through`, then call [`Machine::handle_removed`].
    Remove {
        /// Which of the outbox's queues.
        lane: Lane,
        /// The last sequence number to remove.
        through: u64,
    },
    /// Nothing to do before `until`. When `nudge_wakes`, records arriving end the wait early
    /// ([`Machine::handle_nudge`]); while backing off they do not.
    Wait {
        /// When to poll again.
        until: Duration,
        /// Whether new records end the wait.
        nudge_wakes: bool,
    },
}

/// What the driver read and sent for a [`Poll::Batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The lane the records came from (the one the poll named).
    pub lane: Lane,
    /// Sequence number of the oldest record sent (none when every record read was
    /// unreadable to this build and nothing was sent).
    pub oldest: Option<u64>,
    /// Sequence number of the last record the batch covers, unreadable ones included.
    pub through: u64,
    /// Records sent.
    pub records: usize,
    /// Records this build cannot read (left by another version), skipped within the batch.
    pub unreadable: u64,
}

/// What the driver must tell the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Delivery went wrong (it is retried): the status page's last error.
    Error(String),
    /// The outbox failed to read or remove records (they stay): the status page's last error.
    StoreError(String),
    /// Records the collector will never take were removed from the outbox.
    SetAside {
        /// How many.
        count: u64,
        /// Why, in words (also the last error).
        why: String,
    },
    /// The collector took a batch: report the drops the outbox made meanwhile (an
    /// `agent.outbox_overflow` alert), if any.
    ReportDrops,
    /// Delivery moved to another collector (by index): one failed, or the preferred one is
    /// tried again.
    Collector(usize),
}

/// What removing records will count once the outbox has done it.
#[derive(Debug, Clone)]
struct Removal {
    lane: Lane,
    through: u64,
    /// Records the collector took, and of them how many it already had.
    delivered: Option<(u64, u64)>,
    /// Records set aside, and why.
    set_aside: Option<(u64, String)>,
    /// Unreadable records skipped within an accepted batch.
    unreadable: u64,
    /// Whether to report the outbox's drops afterwards.
    report_drops: bool,
}

/// Where the machine is.
#[derive(Debug, Clone)]
enum State {
    /// Ready to send a batch.
    Ready,
    /// The outbox was empty: look again at `until`, or when nudged.
    Idle { until: Duration },
    /// Backing off after a failure until `until`.
    Backoff { until: Duration },
    /// The collector refused the oldest record of `lane` alone: see whether it takes the next.
    Probing {
        lane: Lane,
        oldest: u64,
        refusal: String,
        /// Records this build cannot read ahead of `oldest`, removed with it.
        unreadable_before: u64,
    },
    /// Records are to be removed from the outbox.
    Removing(Removal),
}

/// Delivery's decisions, fed the time and the outcome of each attempt.
#[derive(Debug)]
pub struct Machine {
    config: Config,
    state: State,
    backoff: Backoff,
    /// Records per batch now, per lane (halved when the collector finds batches too large).
    batch_limit: [usize; Lane::COUNT],
    /// Lanes found empty in this pass over the lanes.
    empty: [bool; Lane::COUNT],
    /// Whether the last outcome was an empty lane: only then does the pass go on to the next
    /// lane. Anything else (a batch sent, a failure, a removal, records arriving, the end of a
    /// rest) starts the next poll from the first lane, so an empty flag never outlives its
    /// pass.
    in_pass: bool,
    next_heartbeat: Duration,
    collector: usize,
    /// When delivery left the preferred collector (the first), while it is on another.
    left_preferred: Option<Duration>,
    /// Collectors that failed in a row since the last one that answered.
    unreachable_in_a_row: usize,
    delivered: Delivered,
    events: VecDeque<Event>,
}

impl Machine {
    /// A machine that sends its first heartbeat at once; `seed` makes the backoff's jitter.
    pub fn new(config: Config, seed: u64) -> Self {
        Self {
            backoff: Backoff::new(config.backoff_min, config.backoff_max, seed),
            batch_limit: Lane::ALL.map(|l| l.batch_records(config.batch_records)),
            empty: [false; Lane::COUNT],
            in_pass: false,
            state: State::Ready,
            next_heartbeat: Duration::ZERO,
            collector: 0,
            left_preferred: None,
            unreachable_in_a_row: 0,
            delivered: Delivered::default(),
            events: VecDeque::new(),
            config,
        }
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Duration) -> Poll {
        if let State::Removing(removal) = &self.state {
            return Poll::Remove {
                lane: removal.lane,
                through: removal.through,
            };
        }
        // Not in the middle of probing a refused record: that decision needs one collector.
        if self
            .left_preferred
            .is_some_and(|left| now >= left + self.config.return_after)
            && !matches!(self.state, State::Probing { .. })
        {
            // Back to the preferred collector; should it still fail, the next takes over
            // again and it waits another interval.
            self.left_preferred = None;
            self.unreachable_in_a_row = 0;
            self.switch_to(0);
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.config.heartbeat_every;
            return Poll::Heartbeat {
                collector: self.collector,
            };
        }
        match &self.state {
            State::Idle { until } if now < *until => return self.wait(*until, true),
            State::Backoff { until } if now < *until => return self.wait(*until, false),
            State::Probing { lane, oldest, .. } => {
                return Poll::Probe {
                    collector: self.collector,
                    lane: *lane,
                    oldest: *oldest,
                };
            }
            // The rest is over: ready again, and an idle machine looks at every lane anew.
            State::Idle { .. } => {
                self.in_pass = false;
                self.state = State::Ready;
            }
            State::Backoff { .. } => self.state = State::Ready,
            State::Ready | State::Removing(_) => {}
        }
        if !std::mem::take(&mut self.in_pass) {
            self.empty = [false; Lane::COUNT];
        }
        let lane = Lane::ALL
            .into_iter()
            .find(|l| !self.empty[l.index()])
            .unwrap_or(Lane::Alerts);
        Poll::Batch {
            collector: self.collector,
            lane,
            records: self.batch_limit[lane.index()],
            bytes: self.config.batch_bytes,
        }
    }

    /// A wait until `until`, cut short by the next heartbeat.
    fn wait(&self, until: Duration, nudge_wakes: bool) -> Poll {
        Poll::Wait {
            until: until.min(self.next_heartbeat),
            nudge_wakes,
        }
    }

    /// When the machine next has something to do unless nudged (for a driver that sleeps).
    pub fn poll_timeout(&self) -> Duration {
        match &self.state {
            State::Idle { until } | State::Backoff { until } => (*until).min(self.next_heartbeat),
            State::Ready | State::Probing { .. } | State::Removing(_) => Duration::ZERO,
        }
    }

    /// Records were added to the outbox: an idle machine looks at once, first lane first.
    pub fn handle_nudge(&mut self) {
        self.in_pass = false;
        if let State::Idle { .. } = self.state {
            self.state = State::Ready;
        }
    }

    /// The outbox had nothing to send in `lane`: the next lane's turn, or a rest when every
    /// lane is empty.
    pub fn handle_empty(&mut self, now: Duration, lane: Lane) {
        self.empty[lane.index()] = true;
        self.in_pass = true;
        if self.empty.iter().all(|e| *e) {
            self.state = State::Idle {
                until: now + self.config.idle_poll,
            };
        }
    }

    /// The outbox failed (`error`): try again after a backoff.
    pub fn handle_store_error(&mut self, now: Duration, error: String) {
        self.events.push_back(Event::StoreError(error));
        self.back_off(now);
    }

    /// The outcome of sending a [`Poll::Batch`] as `sent`.
    pub fn handle_batch(&mut self, now: Duration, sent: Sent, outcome: Result<u64, Failure>) {
        let (count, lane) = (sent.records, sent.lane);
        match outcome {
            Ok(duplicates) => {
                self.reached();
                self.state = State::Removing(Removal {
                    lane,
                    through: sent.through,
                    delivered: Some((count as u64, duplicates)),
                    set_aside: None,
                    unreadable: sent.unreadable,
                    report_drops: true,
                });
            }
            Err(Failure::TooLarge(_)) if self.batch_limit[lane.index()] > 1 => {
                self.halve(lane, count)
            }
            // 422 names a record the collector will never take from this agent: set it aside.
            Err(e @ Failure::Invalid(_)) if count <= 1 => {
                self.reached();
                self.state = State::Removing(Removal {
                    lane,
                    through: sent.through,
                    delivered: None,
                    set_aside: Some((1 + sent.unreadable, e.to_string())),
                    unreadable: 0,
                    report_drops: false,
                });
            }
            Err(e @ (Failure::Unreadable(_) | Failure::TooLarge(_))) if count <= 1 => {
                self.reached();
                match sent.oldest {
                    Some(oldest) => {
                        self.state = State::Probing {
                            lane,
                            oldest,
                            refusal: e.to_string(),
                            unreadable_before: sent.unreadable,
                        }
                    }
                    None => {
                        self.state = State::Removing(Removal {
                            lane,
                            through: sent.through,
                            delivered: None,
                            set_aside: Some((sent.unreadable, e.to_string())),
                            unreadable: 0,
                            report_drops: false,
                        })
                    }
                }
            }
            Err(e @ (Failure::Unreadable(_) | Failure::Invalid(_))) => {
                self.reached();
                self.events.push_back(Event::Error(e.to_string()));
                self.halve(lane, count);
            }
            Err(e) => self.failed(now, e),
        }
    }

    /// The oldest record of a [`Poll::Probe`] is no longer at the head of the outbox (the
    /// outbox dropped it for room: start afresh), or nothing follows it yet (`gone` false:
    /// keep it and back off).
    pub fn handle_probe_missing(&mut self, now: Duration, gone: bool) {
        let State::Probing { refusal, .. } = &self.state else {
            return;
        };
        if gone {
            self.state = State::Ready;
            return;
        }
        let why = format!(
            "the collector refuses the oldest record ({refusal}); it is kept until the collector takes a record after it"
        );
        self.refused_all(now, why);
    }

    /// The outcome of sending the record `next` (the one after the refused oldest) alone.
    pub fn handle_probe(&mut self, now: Duration, next: u64, outcome: Result<u64, Failure>) {
        let State::Probing {
            lane,
            oldest,
            refusal,
            unreadable_before,
        } = &self.state
        else {
            return;
        };
        let (lane, oldest, refusal) = (*lane, *oldest, refusal.clone());
        let unreadable_before = *unreadable_before;
        match outcome {
            Ok(duplicates) => {
                self.reached();
                // The refused record, the unreadable ones ahead of it (the batch skipped them)
                // and those between it and the next: everything up to the next goes.
                let count = next.saturating_sub(oldest) + unreadable_before;
                self.state = State::Removing(Removal {
                    lane,
                    through: next,
                    delivered: Some((1, duplicates)),
                    set_aside: Some((count, refusal)),
                    unreadable: 0,
                    report_drops: false,
                });
            }
            Err(e @ (Failure::Unreadable(_) | Failure::TooLarge(_) | Failure::Invalid(_))) => {
                let why = format!(
                    "the collector refuses every record ({e}); all are kept until it takes them (is it older than this agent?)"
                );
                self.refused_all(now, why);
            }
            Err(e) => self.failed(now, e),
        }
    }

    /// The outcome of a [`Poll::Remove`]: counts what the removal stands for, or backs off
    /// when the outbox failed (the records stay, and are sent again: the collector counts
    /// them as duplicates).
    pub fn handle_removed(&mut self, now: Duration, result: Result<(), String>) {
        let State::Removing(removal) = std::mem::replace(&mut self.state, State::Ready) else {
            return;
        };
        if let Err(error) = result {
            return self.handle_store_error(now, error);
        }
        let d = &mut self.delivered;
        d.connected = true;
        if let Some((count, why)) = removal.set_aside {
            let why = format!("{count} record(s) set aside: {why}");
            d.rejected += count;
            self.events.push_back(Event::SetAside { count, why });
        }
        if let Some((records, duplicates)) = removal.delivered {
            d.records += records;
            d.duplicates += duplicates;
            d.batches += 1;
            d.rejected += removal.unreadable;
            self.backoff.reset();
            self.batch_limit[removal.lane.index()] =
                removal.lane.batch_records(self.config.batch_records);
        }
        if removal.unreadable > 0 {
            self.events.push_back(Event::SetAside {
                count: removal.unreadable,
                why: format!(
                    "{} outbox records this build cannot read (left by another version) were set aside",
                    removal.unreadable
                ),
            });
        }
        if removal.report_drops {
            self.events.push_back(Event::ReportDrops);
        }
    }

    /// The outcome of a [`Poll::Heartbeat`], which ended at `now`: the next one is due an
    /// interval after this one ended, so a heartbeat as slow as the interval (a collector that
    /// times out) still leaves room for a batch between two.
    pub fn handle_heartbeat(&mut self, now: Duration, outcome: Result<(), Failure>) {
        self.next_heartbeat = now + self.config.heartbeat_every;
        match outcome {
            Ok(()) => {
                self.delivered.heartbeats += 1;
                self.delivered.connected = true;
                self.reached();
            }
            Err(e) => {
                self.delivered.connected = false;
                // An agent with nothing to send finds a failed collector by its heartbeats:
                // the next one goes to the next collector, at once until each was tried.
                if !e.answered() && self.config.collectors > 1 {
                    self.move_on(now);
                    if self.unreachable_in_a_row < self.config.collectors {
                        self.next_heartbeat = now;
                    } else {
                        self.unreachable_in_a_row = 0;
                    }
                }
                self.events.push_back(Event::Error(e.to_string()));
            }
        }
    }

    /// What the driver must tell the world, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Delivery counters so far.
    pub fn delivered(&self) -> &Delivered {
        &self.delivered
    }

    /// The collector now delivered to.
    pub fn collector(&self) -> usize {
        self.collector
    }

    /// Records per batch now from `lane`.
    pub fn batch_limit(&self, lane: Lane) -> usize {
        self.batch_limit[lane.index()]
    }

    /// The collector now delivered to failed to answer: on to the next (remembering when the
    /// preferred one was left).
    fn move_on(&mut self, now: Duration) {
        let next = (self.collector + 1) % self.config.collectors.max(1);
        if self.collector == 0 && next != 0 {
            self.left_preferred = Some(now);
        }
        self.switch_to(next);
        self.unreachable_in_a_row += 1;
    }

    /// Delivers to `collector` from now on, and says so when it changes.
    fn switch_to(&mut self, collector: usize) {
        if collector == 0 {
            self.left_preferred = None;
        }
        if collector != self.collector {
            self.collector = collector;
            self.delivered.collector = collector;
            self.events.push_back(Event::Collector(collector));
        }
    }

    /// A collector answered: it is the one to stay with.
    fn reached(&mut self) {
        self.unreachable_in_a_row = 0;
    }

    fn halve(&mut self, lane: Lane, count: usize) {
        self.batch_limit[lane.index()] = (count / 2).max(1);
        self.state = State::Ready;
    }

    fn back_off(&mut self, now: Duration) {
        self.state = State::Backoff {
            until: now + self.backoff.next_wait(),
        };
    }

    /// An attempt failed (`failure`): a collector that cannot be reached is skipped for the
    /// next, until all have been tried; then, and for every other failure, back off. A busy
    /// collector's `Retry-After` is the shortest wait: the backoff still grows and keeps its
    /// jitter, so agents told the same second do not all come back in it.
    fn failed(&mut self, now: Duration, failure: Failure) {
        self.delivered.failures += 1;
        // Not connected in the sense the status and `/metrics` give it: the collector took
        // nothing (a wrong token keeps the gauge at 0, which the alerting rules look for).
        self.delivered.connected = false;
        if failure.answered() {
            self.reached();
        }
        self.events.push_back(Event::Error(failure.to_string()));
        match failure {
            Failure::Busy {
                retry_after: Some(asked),
                ..
            } => {
                let wait = self.backoff.next_wait().max(asked).min(self.backoff.max());
                self.state = State::Backoff { until: now + wait };
            }
            Failure::Unreachable(_) => {
                self.move_on(now);
                if self.unreachable_in_a_row < self.config.collectors {
                    self.state = State::Ready;
                } else {
                    self.unreachable_in_a_row = 0;
                    self.back_off(now);
                }
            }
            _ => self.back_off(now),
        }
    }

    /// The collector answered but took nothing (`why`): back off, keeping everything.
    fn refused_all(&mut self, now: Duration, why: String) {
        self.events.push_back(Event::Error(why));
        self.delivered.failures += 1;
        self.delivered.connected = true;
        self.back_off(now);
    }
}

#[cfg(test)]
mod tests;
