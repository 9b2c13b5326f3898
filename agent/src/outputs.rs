//! Where the agent writes what it saw besides the collector: JSON-lines logs of alerts,
//! transactions and decode events.

pub mod event_log;
pub mod jsonl;
pub mod transaction_log;
