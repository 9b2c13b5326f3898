//! The transaction log: one JSON line per transaction, request joined with response, with
//! addresses and values decoded on both sides (what Zeek's and ICSNPP's Modbus logs give).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::IpAddr;

use otwatch_rules::framing::Encapsulation;
use otwatch_rules::modbus::{Request, Response, Table};
use otwatch_rules::session::Event;
use otwatch_rules::time::Timestamp;
use otwatch_rules::transaction::{Outcome, Transaction};
use serde::Serialize;

use crate::outputs::jsonl::JsonLines;
use otwatch_packet::pipeline::Observer;
use otwatch_rules::flow::{FlowEvent, FlowInfo, Protocol};

/// One line of the transaction log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransactionRecord {
    /// Capture time of the request (of the response when unsolicited), RFC 3339.
    pub ts: Timestamp,
    /// The flow's id within this run.
    pub flow: u64,
    /// TCP or UDP.
    pub transport: Protocol,
    /// MBAP or RTU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encapsulation: Option<Encapsulation>,
    /// Client (master) address.
    pub client_ip: IpAddr,
    /// Client port.
    pub client_port: u16,
    /// Server (slave) address.
    pub server_ip: IpAddr,
    /// Server port.
    pub server_port: u16,
    /// MBAP transaction id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<u16>,
    /// Unit id.
    pub unit_id: u8,
    /// Function code.
    pub function_code: u8,
    /// Function name.
    pub function: &'static str,
    /// Answered, unanswered or unsolicited.
    pub outcome: Outcome,
    /// Response latency in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// The table the request reads or writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<Table>,
    /// First address read or written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<u16>,
    /// Number of items read or written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u16>,
    /// Values written by the request (coils as 0/1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_values: Option<Vec<u16>>,
    /// First address written by function 23.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_address: Option<u16>,
    /// Values returned by the response (coils as 0/1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_values: Option<Vec<u16>>,
    /// Diagnostics sub-function or UMAS function, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_function: Option<&'static str>,
    /// Mask write AND mask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub and_mask: Option<u16>,
    /// Mask write OR mask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub or_mask: Option<u16>,
    /// Exception code, when the server refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception_code: Option<u8>,
    /// Exception name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<&'static str>,
    /// Device identification objects by name (function 43/14 responses).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub device_id: BTreeMap<String, String>,
}

impl TransactionRecord {
    /// Builds the record of one transaction.
    pub fn new(flow: &FlowInfo, t: &Transaction<'_>) -> Self {
        let ts = t.request_ts.or(t.response_ts).unwrap_or_default();
        let function = t
            .request
            .map(|r| r.function())
            .or(t.response.map(|r| r.function()));
        let mut record = Self {
            ts,
            flow: flow.id,
            transport: flow.protocol,
            encapsulation: flow.encapsulation,
            client_ip: flow.client.ip(),
            client_port: flow.client.port(),
            server_ip: flow.server.ip(),
            server_port: flow.server.port(),
            transaction_id: t.transaction_id,
            unit_id: t.unit_id,
            function_code: function.map_or(0, |f| f.code()),
            function: function.map_or("unknown", |f| f.name()),
            outcome: t.outcome,
            latency_us: t
                .latency()
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            table: None,
            address: None,
            quantity: None,
            write_values: None,
            write_address: None,
            read_values: None,
            sub_function: None,
            and_mask: None,
            or_mask: None,
            exception_code: None,
            exception: None,
            device_id: BTreeMap::new(),
        };
        if let Some(request) = &t.request {
            record.request(request);
        }
        if let Some(response) = &t.response {
            record.response(response);
        }
        record
    }

    fn request(&mut self, request: &Request<'_>) {
        if let Some((table, address, quantity)) = request.read_range() {
            self.table = Some(table);
            self.address = Some(address);
            self.quantity = Some(quantity);
        }
        if let Some((table, address, quantity)) = request.write_range() {
            if self.table.is_some() {
                self.write_address = Some(address);
            } else {
                self.table = Some(table);
                self.address = Some(address);
                self.quantity = Some(quantity);
            }
        }
        match *request {
            Request::WriteSingleCoil { value, .. } => {
                self.write_values = Some(vec![u16::from(value)]);
            }
            Request::WriteSingleRegister { value, .. } => self.write_values = Some(vec![value]),
            Request::WriteMultipleCoils { values, .. } => {
                self.write_values = Some(values.iter().map(u16::from).collect());
            }
            Request::WriteMultipleRegisters { values, .. }
            | Request::ReadWriteMultipleRegisters { values, .. } => {
                self.write_values = Some(values.iter().collect());
            }
            Request::MaskWriteRegister {
                and_mask, or_mask, ..
            } => {
                self.and_mask = Some(and_mask);
                self.or_mask = Some(or_mask);
            }
            Request::Diagnostics { sub_function, .. } => {
                self.sub_function = Some(sub_function.name());
            }
            Request::Umas { function, .. } => self.sub_function = Some(function.name()),
            Request::ReadDeviceId(_) => self.sub_function = Some("read_device_identification"),
            Request::CanOpen { .. } => self.sub_function = Some("canopen_general_reference"),
            _ => {}
        }
    }

    fn response(&mut self, response: &Response<'_>) {
        match *response {
            Response::ReadBits { values, .. } => {
                self.read_values = Some(values.iter().map(u16::from).collect());
            }
            Response::ReadRegisters { values, .. } | Response::ReadFifoQueue { values } => {
                self.read_values = Some(values.iter().collect());
            }
            Response::Exception { code, .. } => {
                self.exception_code = Some(code.code());
                self.exception = Some(code.name());
            }
            Response::ReadDeviceId(id) => {
                self.device_id = id
                    .objects()
                    .map(|(oid, value)| {
                        let name = match oid.name() {
                            "private" | "reserved" => format!("object_{}", oid.0),
                            standard => standard.to_string(),
                        };
                        (name, String::from_utf8_lossy(value).into_owned())
                    })
                    .collect();
            }
            Response::Diagnostics { sub_function, .. } if self.sub_function.is_none() => {
                self.sub_function = Some(sub_function.name());
            }
            _ => {}
        }
    }
}

/// Writes every TransactionRecord as one JSON line.
pub struct TransactionLog<W: Write>(JsonLines<W>);

impl<W: Write> TransactionLog<W> {
    /// A log writing to `out`.
    pub fn new(out: W) -> Self {
        Self(JsonLines::new(out))
    }

    /// Flushes, returning the number of records or the first write error.
    pub fn finish(self) -> io::Result<u64> {
        self.0.finish()
    }
}

impl<W: Write> Observer for TransactionLog<W> {
    fn flow_event(&mut self, _ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        if let FlowEvent::Session(Event::Transaction(t)) = event {
            self.0.write(&TransactionRecord::new(flow, t));
        }
    }
}
