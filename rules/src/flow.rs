//! What a flow is to everyone above the flow table: its identity and endpoints
//! ([`FlowInfo`]) and the events it reports ([`FlowEvent`]): session events plus the stream
//! anomalies reassembly finds. Detectors, logs and counters all consume these.

use std::net::SocketAddr;

use serde::Serialize;

use crate::Direction;
use crate::framing::Encapsulation;
use crate::session::Event;
use crate::time::Timestamp;

/// The transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// What observers learn about the flow an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    /// Sequential id, unique within one agent run.
    pub id: u64,
    /// Outermost VLAN id, 0 when untagged.
    pub vlan: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The Modbus client (master).
    pub client: SocketAddr,
    /// The Modbus server (slave).
    pub server: SocketAddr,
    /// How PDUs are wrapped, once recognised.
    pub encapsulation: Option<Encapsulation>,
    /// Requests decoded on this flow so far.
    pub requests: u64,
    /// When the flow was first seen.
    pub first_seen: Timestamp,
    /// When bytes of this flow were last lost (a gap in either direction).
    pub last_gap: Option<Timestamp>,
    /// When the server first answered on this flow (a response, expected or not).
    pub first_answer: Option<Timestamp>,
    /// When the server last answered on this flow: how availability tells a request the
    /// tracker gave up on from a device that fell silent.
    pub last_answer: Option<Timestamp>,
    /// Requests decoded on this flow up to its last answer, and RTU broadcasts since (which
    /// expect none): the others wait for an answer (or were lost).
    pub answered_requests: u64,
    /// Whether the connection's opening handshake was captured (a response before any request
    /// is then unsolicited, not a mid-stream pickup).
    pub handshake_seen: bool,
    /// The client's Ethernet address as first seen (the last router's, when routed).
    pub client_mac: Option<[u8; 6]>,
    /// The server's Ethernet address as first seen.
    pub server_mac: Option<[u8; 6]>,
}

impl FlowInfo {
    /// A flow from `client` to `server` first seen at `first_seen`, with nothing else known of
    /// it yet: no VLAN, no encapsulation, no requests or answers, no handshake, no MACs.
    pub fn new(
        id: u64,
        protocol: Protocol,
        client: SocketAddr,
        server: SocketAddr,
        first_seen: Timestamp,
    ) -> Self {
        Self {
            id,
            vlan: 0,
            protocol,
            client,
            server,
            encapsulation: None,
            requests: 0,
            first_seen,
            last_gap: None,
            first_answer: None,
            last_answer: None,
            answered_requests: 0,
            handshake_seen: false,
            client_mac: None,
            server_mac: None,
        }
    }

    /// Whether a request to `unit_id` on this flow waits for an answer: not unit 0 on a
    /// serial line (RTU), a broadcast no device answers.
    #[inline]
    pub fn expects_answer(&self, unit_id: u8) -> bool {
        unit_id != 0 || self.encapsulation != Some(Encapsulation::Rtu)
    }
}

/// Why a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Both sides sent FIN.
    Fin,
    /// A side sent RST.
    Reset,
    /// A new connection reused the addresses and ports.
    Reused,
    /// Silent for longer than the idle timeout.
    Idle,
    /// Evicted to make room for a new flow.
    Evicted,
    /// The capture ended.
    End,
    /// The capture's clock stepped back: the flow's times would lie in the future.
    ClockStep,
}

/// What a flow reports besides its session's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEvent<'a> {
    /// An event of the Modbus session (lent, not copied: the session builds it just before).
    Session(&'a Event<'a>),
    /// Stream bytes that were never captured.
    Gap {
        /// The side that sent them.
        direction: Direction,
        /// How many.
        bytes: u64,
    },
    /// A retransmission of bytes already seen.
    Retransmission {
        /// The side that resent.
        direction: Direction,
        /// Bytes repeated.
        bytes: usize,
    },
    /// Overlapping segments with different contents (evasion).
    OverlapConflict {
        /// The side that sent them.
        direction: Direction,
        /// Bytes in conflict.
        bytes: usize,
    },
    /// The flow was created.
    Opened,
    /// The server accepted the connection: it answered the opening SYN with a SYN-ACK.
    Accepted,
    /// A side reset the connection (its [`FlowEvent::Closed`] follows).
    Reset {
        /// Whether the server (rather than the client) sent the RST.
        by_server: bool,
    },
    /// The flow ended.
    Closed(CloseReason),
}
