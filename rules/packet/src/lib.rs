//! The packet path, pure: captured frames in, flow events out.
//!
//! A [`frame::CapturedPacket`] is dissected ([`dissect`]), IPv4 fragments are put back together
//! ([`defrag`]), packets are routed to their flow ([`flow_table`]), where TCP streams are
//! reassembled and Modbus sessions decoded by `otwatch-rules`, and every event goes to an
//! [`pipeline::Observer`]. [`pipeline::Pipeline`] ties them together; replay and live capture
//! in the agent drive the same pipeline.
//!
//! The contract is the one of `otwatch-rules`: no I/O and no clock. Time is the capture time
//! of the frames (and of [`pipeline::Pipeline::tick`]), so the same frames always give the same
//! events. `rules/.clippy.toml` bans the clock, the file system, sockets and sleeping here, and
//! `tests/tests/crate_boundaries.rs` checks that no I/O crate is in this crate's dependencies.

pub mod capture_file;
pub mod defrag;
pub mod detector;
pub mod dissect;
pub mod evidence;
pub mod flow_table;
pub mod frame;
pub mod modbus_counters;
pub mod network_tap;
pub mod pipeline;

/// For [`forward_observer!`]: the rules crate's types, by a path that works from any crate.
#[doc(hidden)]
pub use otwatch_rules as __rules;
