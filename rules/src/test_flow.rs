//! Flows and session events for unit tests (compiled only for them).

use crate::flow::{FlowInfo, Protocol};
use crate::framing::Encapsulation;
use crate::modbus::Request;
use crate::session::Event;
use crate::time::Timestamp;

/// A Modbus/TCP flow from `client` (port 40000) to `server` (port 502), handshake seen, no
/// MACs.
pub(crate) fn tcp_flow(client: &str, server: &str) -> FlowInfo {
    FlowInfo {
        id: 1,
        vlan: 0,
        protocol: Protocol::Tcp,
        client: format!("{client}:40000").parse().expect("a client address"),
        server: format!("{server}:502").parse().expect("a server address"),
        encapsulation: Some(Encapsulation::Mbap),
        requests: 1,
        first_seen: Timestamp::from_secs(1),
        last_gap: None,
        first_answer: None,
        last_answer: None,
        answered_requests: 0,
        handshake_seen: true,
        client_mac: None,
        server_mac: None,
    }
}

/// The request event of `pdu` to `unit`.
pub(crate) fn request_event(unit: u8, pdu: &[u8]) -> Event<'_> {
    Event::Request {
        transaction_id: Some(1),
        unit_id: unit,
        request: Request::decode(pdu).expect("a request PDU"),
        raw: pdu,
        outstanding: 1,
    }
}
