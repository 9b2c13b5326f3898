//! The guard's judge: the passive agent's engine (built-in detectors and the policy), fed each
//! request of one guarded connection as the agent would see it on the wire, with the rules whose
//! findings block it.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::Judgement;
use crate::alert::{Alert, rule};
use crate::detect::Engine;
use crate::flow::{FlowEvent, FlowInfo, Protocol};
use crate::framing::Encapsulation;
use crate::modbus::Request;
use crate::session::Event;
use crate::time::Timestamp;

/// The rules whose findings block a request in enforce mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSet {
    rules: BTreeSet<String>,
}

impl Default for BlockSet {
    /// What a single request does that no plant needs done unasked: a master the policy does
    /// not know; a write or function it does not allow; a write outside its ranges or bounds;
    /// diagnostics that silence or restart a device; a UMAS stop, start or program download;
    /// a broadcast write. Rates, time windows and unexpected reads alert without blocking
    /// (blocking an HMI's polls blinds the operators); values read back are only checked
    /// after the fact.
    fn default() -> Self {
        Self::of(
            [
                &rule::UNKNOWN_MASTER,
                &rule::UNAUTHORIZED_WRITE,
                &rule::UNAUTHORIZED_FUNCTION,
                &rule::WRITE_OUTSIDE_RANGES,
                &rule::SETPOINT_OUT_OF_BOUNDS,
                &rule::FORCE_LISTEN_ONLY,
                &rule::RESTART_COMMUNICATIONS,
                &rule::UMAS_STOP,
                &rule::UMAS_START,
                &rule::UMAS_PROGRAM_DOWNLOAD,
                &rule::BROADCAST_WRITE,
            ]
            .iter()
            .map(|meta| meta.id),
        )
    }
}

impl BlockSet {
    /// The rules with these ids (a policy's own `[[alert]]` rules are `policy.alert.NAME`).
    pub fn of<S: Into<String>>(rules: impl IntoIterator<Item = S>) -> Self {
        Self {
            rules: rules.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether a finding of `rule_id` blocks.
    pub fn blocks(&self, rule_id: &str) -> bool {
        self.rules.contains(rule_id)
    }
}

/// A request in hand, as the guard's connection has it.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// Its MBAP transaction id.
    pub transaction_id: u16,
    /// The unit it addresses.
    pub unit_id: u8,
    /// The request, decoded.
    pub request: &'a Request<'a>,
    /// Its PDU as sent.
    pub pdu: &'a [u8],
    /// Requests of the connection waiting for answers, this one included.
    pub outstanding: usize,
}

/// The judge of one guarded connection: the engine, the connection as a flow, the block set.
pub struct EngineJudge {
    engine: Engine,
    flow: FlowInfo,
    block: BlockSet,
}

impl std::fmt::Debug for EngineJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineJudge")
            .field("client", &self.flow.client)
            .field("server", &self.flow.server)
            .field("block", &self.block)
            .finish()
    }
}

impl EngineJudge {
    /// A judge for the connection from `client` to `server`, opened at `now`, with its own
    /// engine (state per connection: the judgement of a request depends on the policy and on
    /// what came before it on the pair).
    pub fn new(
        engine: Engine,
        client: SocketAddr,
        server: SocketAddr,
        block: BlockSet,
        now: Timestamp,
    ) -> Self {
        Self {
            engine,
            // Through the guard: a Modbus/TCP connection whose handshake the guard made.
            flow: FlowInfo {
                encapsulation: Some(Encapsulation::Mbap),
                handshake_seen: true,
                ..FlowInfo::new(0, Protocol::Tcp, client, server, now)
            },
            block,
        }
    }

    /// Judges `asked` at `now`; the alerts the engine raises meanwhile go to `alerts`. Blocked
    /// when any finding of the request is in the block set.
    pub fn judge(
        &mut self,
        now: Timestamp,
        asked: Asked<'_>,
        alerts: &mut impl FnMut(Alert),
    ) -> Judgement {
        self.flow.requests = self.flow.requests.saturating_add(1);
        let event = Event::Request {
            transaction_id: Some(asked.transaction_id),
            unit_id: asked.unit_id,
            request: *asked.request,
            raw: asked.pdu,
            outstanding: asked.outstanding,
        };
        let mut blocking: Option<String> = None;
        let block = &self.block;
        self.engine.observe_judged(
            now,
            &self.flow,
            &FlowEvent::Session(&event),
            alerts,
            &mut |found| {
                let id = found.rule_id();
                if blocking.is_none() && block.blocks(&id) {
                    blocking = Some(id);
                }
            },
        );
        match blocking {
            Some(rule) => Judgement::Block { rule },
            None => Judgement::Allow,
        }
    }
}

#[cfg(test)]
mod tests;
