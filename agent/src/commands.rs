//! The subcommands' work: `run` (live capture), `replay` (capture files), `learn` (a policy
//! from traffic), and the offline path replay and learn share.

pub mod learn;
pub(crate) mod offline;
pub mod replay;
pub mod run;
