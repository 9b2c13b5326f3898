//! The otwatch agent: capture, reassembly, decoding and reporting of Modbus traffic.
//!
//! The protocol logic lives in `otwatch-rules`; this crate adds the parts that touch the world:
//! capture files and interfaces, packet dissection, the flow table, and outputs.

pub mod assets;
pub mod capture;
pub mod config;
pub mod defrag;
pub mod delivery;
pub mod detection;
pub mod dissect;
pub mod event_log;
pub mod flow;
pub mod jsonl;
pub mod learn;
pub mod metrics;
pub mod offline;
pub mod outbox;
pub mod pipeline;
pub mod policy_file;
pub mod policy_reload;
pub mod publisher;
pub mod replay;
pub mod run;
pub mod sender;
pub mod shipper;
pub mod status;
pub mod summary;
pub mod transaction_log;
