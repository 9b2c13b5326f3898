//! The detection engine as a pipeline [`Observer`]: every flow event goes to the engine, every
//! alert it raises goes to an [`AlertSink`]. With a `Vec<Alert>` as the sink this is the whole
//! deterministic path from frames to alerts; the agent plugs in its outbox instead.

use std::net::SocketAddr;
use std::sync::Arc;

use otwatch_rules::alert::{Alert, RuleMeta};
use otwatch_rules::detect::Engine;
use otwatch_rules::flow::{FlowEvent, FlowInfo};
use otwatch_rules::policy::Policy;
use otwatch_rules::time::Timestamp;

use crate::pipeline::Observer;

/// Where a [`Detector`]'s alerts go.
pub trait AlertSink {
    /// One alert, in the order the engine raised it.
    fn alert(&mut self, alert: Alert);
}

impl AlertSink for Vec<Alert> {
    fn alert(&mut self, alert: Alert) {
        self.push(alert);
    }
}

/// The detection engine and where its alerts go.
pub struct Detector<S> {
    engine: Engine,
    sink: S,
}

impl<S: AlertSink> Detector<S> {
    /// `engine`'s alerts go to `sink`.
    pub fn new(engine: Engine, sink: S) -> Self {
        Self { engine, sink }
    }

    /// Puts `policy` in force from the next event; what the old one held back is raised first.
    pub fn set_policy(&mut self, policy: Option<Arc<Policy>>) {
        let Self { engine, sink } = self;
        engine.set_policy(policy, &mut |alert| sink.alert(alert));
    }

    /// Raises an alert about the agent itself (a rejected policy reload, for instance).
    pub fn agent_alert(
        &mut self,
        meta: &'static RuleMeta,
        ts: Timestamp,
        agent_addr: SocketAddr,
        message: String,
    ) {
        let Self { engine, sink } = self;
        engine.agent_alert(meta, ts, agent_addr, message, &mut |alert| {
            sink.alert(alert)
        });
    }

    /// The policy in force.
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.engine.policy()
    }

    /// Where the alerts went.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Where the alerts went, mutably.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Gives the sink back.
    pub fn into_sink(self) -> S {
        self.sink
    }
}

impl<S: AlertSink> Observer for Detector<S> {
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        let Self { engine, sink } = self;
        engine.observe(ts, flow, event, &mut |alert| sink.alert(alert));
    }

    fn tick(&mut self, now: Timestamp) {
        let Self { engine, sink } = self;
        engine.flush(now, &mut |alert| sink.alert(alert));
    }

    fn finish(&mut self) {
        let Self { engine, sink } = self;
        engine.finish(&mut |alert| sink.alert(alert));
    }

    fn clock_stepped(&mut self, before: Timestamp, now: Timestamp) {
        let Self { engine, sink } = self;
        engine.clock_stepped(before, now, &mut |alert| sink.alert(alert));
    }
}
