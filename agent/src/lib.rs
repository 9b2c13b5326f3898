//! The otwatch agent: capture, reassembly, decoding and reporting of Modbus traffic.
//!
//! The protocol logic lives in `otwatch-rules`, the packet path in `otwatch-packet` and
//! delivery's decisions in `otwatch-delivery`; this crate adds the parts that touch the world:
//! capture, settings, the outbox and the HTTPS sender, outputs, metrics and the commands.

pub mod capture;
pub mod commands;
pub mod delivery;
pub mod detection;
pub(crate) mod outputs;
pub mod settings;
pub mod telemetry;
