//! Lanes: the kinds of record that share an agent's outbox, in the order they are delivered.
//!
//! Each lane is a queue of its own in the outbox with its own share of the disk budget, and
//! the machine always sends from the first lane that has records. Alerts come first and are
//! never dropped to make room for another lane's records: when the outbox is full, a new
//! alert pushes out the lowest lane's oldest records before any alert, and a lower lane's
//! record only ever pushes out records of its own lane. Bulky records get a lane of their own
//! after these: evidence captures (the packets behind serious alerts), then learned policies.

/// A kind of record, by delivery priority: earlier lanes go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Alerts: first, and never dropped for another lane's records.
    Alerts,
    /// What the agent learned about hosts: after alerts, within a quarter of the budget.
    Observations,
    /// The packets behind serious alerts: within an eighth of the budget.
    Evidence,
    /// Policies learned because the collector asked: last, one per batch, within an eighth
    /// of the budget.
    Learned,
}

impl Lane {
    /// Every lane, first to last.
    pub const ALL: [Lane; 4] = [
        Lane::Alerts,
        Lane::Observations,
        Lane::Evidence,
        Lane::Learned,
    ];

    /// How many lanes there are.
    pub const COUNT: usize = Self::ALL.len();

    /// The lane's position, 0 for the first: an index into per-lane arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The lane's name in logs, metrics and the status page.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Alerts => "alerts",
            Lane::Observations => "observations",
            Lane::Evidence => "evidence",
            Lane::Learned => "learned",
        }
    }

    /// The most bytes of records this lane may hold in an outbox of `total` bytes. The shares
    /// add up to more than the whole: the first lane may use all of it, taking room from the
    /// others as it needs it.
    pub fn budget(self, total: u64) -> u64 {
        match self {
            Lane::Alerts => total,
            Lane::Observations => total / 4,
            Lane::Evidence | Lane::Learned => total / 8,
        }
    }

    /// The most records of this lane in one batch, when `configured` is the machine's
    /// setting: evidence records go at most [`MAX_EVIDENCE_PER_BATCH`] at a time (what the
    /// collector takes in one batch), whatever their size.
    pub fn batch_records(self, configured: usize) -> usize {
        match self {
            Lane::Evidence => configured.clamp(1, MAX_EVIDENCE_PER_BATCH),
            // Each is up to 256 KiB: one at a time keeps a batch small.
            Lane::Learned => 1,
            Lane::Alerts | Lane::Observations => configured.max(1),
        }
    }
}

/// Most evidence records per batch: what the collector takes in one
/// (`otwatch_rules::validate::MAX_EVIDENCE_RECORDS`, checked by a test of the agent). The
/// batch's byte limit keeps large pcaps to fewer.
pub const MAX_EVIDENCE_PER_BATCH: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_listed_first_to_last_and_indexed_in_that_order() {
        for (i, lane) in Lane::ALL.iter().enumerate() {
            assert_eq!(lane.index(), i);
        }
        assert!(Lane::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn alerts_may_use_the_whole_budget_and_other_lanes_only_a_share() {
        assert_eq!(Lane::Alerts.budget(1000), 1000);
        assert_eq!(Lane::Observations.budget(1000), 250);
        assert_eq!(Lane::Evidence.budget(1000), 125);
    }

    #[test]
    fn evidence_goes_a_few_records_per_batch_whatever_the_setting() {
        assert_eq!(Lane::Evidence.batch_records(500), MAX_EVIDENCE_PER_BATCH);
        assert_eq!(Lane::Evidence.batch_records(4), 4);
        assert_eq!(Lane::Evidence.batch_records(64), 64);
        assert_eq!(Lane::Alerts.batch_records(500), 500);
        assert_eq!(Lane::Observations.batch_records(0), 1);
        assert_eq!(Lane::Learned.batch_records(500), 1);
    }
}
