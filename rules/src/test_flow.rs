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
        encapsulation: Some(Encapsulation::Mbap),
        requests: 1,
        handshake_seen: true,
        ..FlowInfo::new(
            1,
            Protocol::Tcp,
            format!("{client}:40000").parse().expect("a client address"),
            format!("{server}:502").parse().expect("a server address"),
            Timestamp::from_secs(1),
        )
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

/// A plant's policy: scada (10.0.0.9) polls and sets setpoints on the PLC (10.0.0.3, unit 1)
/// within registers 0-99 and 400-403 and values 0-1500; the hmi (10.0.0.20) only reads.
pub(crate) const PLANT_POLICY: &str = r#"
version = 1

[[asset]]
name = "scada"
address = "10.0.0.9"
role = "master"

[[asset]]
name = "hmi"
address = "10.0.0.20"
role = "master"

[[asset]]
name = "plc"
address = "10.0.0.3"
units = [1]
role = "slave"

[[allow]]
name = "scada polls and sets setpoints"
from = "scada"
to = "plc"
functions = ["read", "write_single_register"]
holding_registers = ["0-99", "400-403"]
write_values = { min = 0, max = 1500 }

[[allow]]
name = "hmi reads"
from = "hmi"
to = "plc"
functions = ["read"]
"#;
