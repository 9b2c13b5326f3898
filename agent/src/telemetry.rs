//! What the agent says about itself: the status the workers publish, `/metrics`, the
//! heartbeat's figures.

pub mod metrics;
pub mod publisher;
pub mod status;
