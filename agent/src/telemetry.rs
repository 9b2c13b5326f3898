//! What the agent says about itself: the status the workers publish, `/metrics`, the
//! heartbeat's figures.

pub(crate) mod events;
pub(crate) mod metrics;
pub(crate) mod publisher;
pub mod status;
