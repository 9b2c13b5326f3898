//! The otwatch agent: capture, reassembly, decoding and reporting of Modbus traffic.
//!
//! The protocol logic lives in `otwatch-rules`; this crate adds the parts that touch the world:
//! capture files and interfaces, packet dissection, the flow table, and outputs.

pub mod assets;
pub mod capture;
pub mod config;
pub mod delivery;
pub mod detection;
pub mod event_log;
pub mod jsonl;
pub mod learn;
pub mod metrics;
pub mod offline;
pub mod outbox;
pub mod policy_file;
pub mod policy_reload;
pub mod publisher;
pub mod replay;
pub mod run;
pub mod sender;
pub mod settings;
pub mod shipper;
pub mod status;
pub mod transaction_log;
