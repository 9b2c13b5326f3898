//! Lanes: the kinds of record that share an agent's outbox, in the order they are delivered.
//!
//! Each lane is a queue of its own in the outbox with its own share of the disk budget, and
//! the machine always sends from the first lane that has records. Alerts come first and are
//! never dropped to make room for another lane's records: when the outbox is full, a new
//! alert pushes out the lowest lane's oldest records before any alert, and a lower lane's
//! record only ever pushes out records of its own lane. Bulky records (evidence captures,
//! learned policies) get a lane of their own after these when they arrive.

/// A kind of record, by delivery priority: earlier lanes go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Alerts: first, and never dropped for another lane's records.
    Alerts,
    /// What the agent learned about hosts: after alerts, within a quarter of the budget.
    Observations,
}

impl Lane {
    /// Every lane, first to last.
    pub const ALL: [Lane; 2] = [Lane::Alerts, Lane::Observations];

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
        }
    }

    /// The most bytes of records this lane may hold in an outbox of `total` bytes. The shares
    /// add up to more than the whole: the first lane may use all of it, taking room from the
    /// others as it needs it.
    pub fn budget(self, total: u64) -> u64 {
        match self {
            Lane::Alerts => total,
            Lane::Observations => total / 4,
        }
    }
}

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
    }
}
