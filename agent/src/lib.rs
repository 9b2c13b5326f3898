//! The otwatch agent: capture, reassembly, decoding and reporting of Modbus traffic.
//!
//! The protocol logic lives in `otwatch-rules`; this crate adds the parts that touch the world:
//! capture files and interfaces, packet dissection, the flow table, and outputs.

pub mod capture;
pub mod commands;
pub mod delivery;
pub mod detection;
pub(crate) mod outputs;
pub mod settings;
pub mod telemetry;
