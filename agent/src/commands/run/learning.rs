//! Learning while running, because the collector asked ([`LearnRequests`]): this thread tells
//! every capture worker to start learning, and once the request's duration is over, collects
//! their learners, merges them (a host pair's traffic goes to one worker, so together they
//! saw it all), writes the policy and queues it in the outbox's learned lane.

use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant};

use otwatch_rules::learn::Learner;
use otwatch_rules::validate::MAX_POLICY_BYTES;
use otwatch_rules::wire::LearnedPolicy;

use crate::delivery::outbox::{Outbox, Record};
use crate::detection::learn_requests::LearnRequests;

/// What a capture worker is told about learning.
#[derive(Debug)]
pub(super) enum LearnCommand {
    /// Start learning afresh (what was learned for an earlier request is dropped).
    Start,
    /// Stop and hand over what was learned.
    Finish(Sender<Learner>),
}

/// How long the workers have to hand their learners over: each looks between two batches.
const HANDOVER: Duration = Duration::from_secs(5);

/// The learning in progress, if any.
#[derive(Debug)]
pub(super) struct Coordinator {
    requests: Arc<LearnRequests>,
    /// The request, when it started and when it ends.
    campaign: Option<(String, Duration, Instant)>,
    /// Named in the learned policy's header.
    what: String,
}

impl Coordinator {
    /// Learns for the requests posted in `requests`; `what` names the agent and its capture.
    pub(super) fn new(requests: Arc<LearnRequests>, what: String) -> Self {
        Self {
            requests,
            campaign: None,
            what,
        }
    }

    /// Starts a request posted since the last call, or finishes the one whose time is up.
    pub(super) fn poll<W>(&mut self, workers: &[W], outbox: Option<&Outbox>)
    where
        W: Fn(LearnCommand) -> bool,
    {
        if let Some((id, duration)) = self.requests.take() {
            for tell in workers {
                tell(LearnCommand::Start);
            }
            tracing::info!(
                request = id,
                "learning for {} as the collector asked",
                humantime::format_duration(duration)
            );
            self.campaign = Some((id, duration, Instant::now() + duration));
        }
        let Some((id, duration, ends)) = &self.campaign else {
            return;
        };
        if Instant::now() < *ends {
            return;
        }
        let (id, duration) = (id.clone(), *duration);
        self.campaign = None;
        let (tx, rx) = channel();
        let told = workers
            .iter()
            .filter(|tell| tell(LearnCommand::Finish(tx.clone())))
            .count();
        drop(tx);
        let mut learner = Learner::new();
        let mut shares = 0;
        let deadline = Instant::now() + HANDOVER;
        while let Ok(share) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            learner.merge(share);
            shares += 1;
        }
        if !self.requests.is_current(&id) {
            return;
        }
        if shares < told {
            // A policy missing a worker's share would alert on that share's traffic.
            tracing::error!(
                request = id,
                "{shares} of {told} capture workers handed over what they learned: learning again"
            );
            self.requests.retry(&id);
            return;
        }
        let source = format!(
            "{} over {}",
            self.what,
            humantime::format_duration(duration)
        );
        let toml = learner.to_policy(&[source]);
        let requests = learner.requests();
        if toml.len() > MAX_POLICY_BYTES {
            tracing::error!(
                request = id,
                "the learned policy is {} bytes, over the {MAX_POLICY_BYTES} the collector takes: not sent (learn on fewer hosts, or with `otwatch-agent learn` and edit it)",
                toml.len()
            );
            self.requests.finish(&id);
            return;
        }
        let record = Record::Learned(LearnedPolicy {
            request: id.clone(),
            toml,
            requests,
        });
        match outbox.map(|o| o.push(std::slice::from_ref(&record))) {
            Some(Ok(pushed)) if pushed.stored == 1 => {
                tracing::info!(
                    request = id,
                    requests,
                    "learned; the policy waits in the outbox for the collector"
                );
                self.requests.finish(&id);
            }
            Some(Ok(_)) => {
                tracing::error!(
                    request = id,
                    "the outbox had no room for the learned policy: learning again"
                );
                self.requests.retry(&id);
            }
            Some(Err(e)) => {
                tracing::error!(
                    request = id,
                    "cannot queue the learned policy: {e}; learning again"
                );
                self.requests.retry(&id);
            }
            None => self.requests.finish(&id),
        }
    }
}
