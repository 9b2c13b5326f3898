//! otwatch's pure core: Modbus decoding, TCP stream reassembly, transaction tracking, and (in
//! later modules) the policy language and detectors.
//!
//! Nothing in this crate does I/O or reads a clock. Callers pass bytes and capture time in and
//! get events out, so any scenario replays in microseconds in a test and a fuzzer reaches every
//! branch.
#![forbid(unsafe_code)]

pub mod alert;
pub mod conversations;
pub mod detect;
pub mod flow;
pub mod framing;
pub mod guard;
pub mod inventory;
pub mod learn;
pub mod mac;
pub mod modbus;
pub mod network;
pub mod policy;
pub mod reassembly;
pub mod session;
pub mod time;
pub mod transaction;
pub mod validate;
pub mod wire;

#[cfg(test)]
mod test_flow;

use serde::Serialize;

/// Which way a segment or frame travels between a Modbus client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client (master) to server (slave): requests.
    ToServer,
    /// Server to client: responses.
    ToClient,
}

impl Direction {
    /// The other direction.
    pub fn reverse(self) -> Self {
        match self {
            Self::ToServer => Self::ToClient,
            Self::ToClient => Self::ToServer,
        }
    }
}
