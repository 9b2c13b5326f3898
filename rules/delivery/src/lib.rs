//! Delivery from an agent's outbox to its collectors, as a state machine without I/O.
//!
//! The agent's shipper thread owns the outbox, the HTTPS client and the clock; this crate owns
//! every decision: when to send a heartbeat, how many records go in the next batch, what a
//! refusal means for the records in it, how long to wait after a failure, which collector to
//! try next. It is driven the way quinn-proto drives a connection:
//!
//! - [`Machine::poll`] says what to do at a given time: send a heartbeat, send a batch of at
//!   most so many records and bytes from one [`Lane`] of the outbox, probe the record after a refused one, or wait.
//! - The driver does it and feeds the outcome back: [`Machine::handle_batch`],
//!   [`Machine::handle_probe`], [`Machine::handle_heartbeat`], [`Machine::handle_removed`],
//!   and a few more for an empty or failing outbox.
//! - [`Machine::poll_event`] hands out what the driver must tell the world (an error for the
//!   status page, records set aside, drops to report to the collector).
//!
//! [`Failure`] is what an attempt can come to besides success, with the one mapping from HTTP
//! responses to it ([`Failure::from_http`]). Time is a [`Duration`] since the driver started,
//! from a monotonic clock; randomness (the backoff's jitter) comes from a seed.
//!
//! [`Duration`]: std::time::Duration

pub mod backoff;
pub mod counters;
pub mod failure;
pub mod lane;
pub mod machine;

pub use counters::Delivered;
pub use failure::Failure;
pub use lane::Lane;
pub use machine::{Config, Event, Machine, Poll, Sent};
