//! A PLC made of a real Modbus stack (tokio-modbus): coils, discrete inputs, holding and input
//! registers in memory, answering like a device does (exceptions for bad addresses and
//! unsupported functions).

use std::future::{Ready, ready};
use std::sync::Mutex;

use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// Addresses each table holds.
pub const TABLE_SIZE: u16 = 1000;

/// The memory of one simulated PLC.
#[derive(Debug)]
pub struct Plc {
    coils: Mutex<Vec<bool>>,
    holding: Mutex<Vec<u16>>,
}

impl Default for Plc {
    fn default() -> Self {
        Self {
            coils: Mutex::new(vec![false; usize::from(TABLE_SIZE)]),
            holding: Mutex::new((0..TABLE_SIZE).collect()),
        }
    }
}

/// Discrete input `i`: a fixed pattern, so reads are checkable.
pub fn discrete_input(i: u16) -> bool {
    i.is_multiple_of(3)
}

/// Input register `i`: a fixed pattern, so reads are checkable.
pub fn input_register(i: u16) -> u16 {
    i.wrapping_mul(7).wrapping_add(100)
}

fn range(address: u16, quantity: u16) -> Result<std::ops::Range<usize>, ExceptionCode> {
    let end = u32::from(address) + u32::from(quantity);
    if end > u32::from(TABLE_SIZE) {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(usize::from(address)..end as usize)
}

impl Plc {
    fn handle(&self, request: Request<'_>) -> Result<Response, ExceptionCode> {
        let mut coils = self
            .coils
            .lock()
            .map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        let mut holding = self
            .holding
            .lock()
            .map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        Ok(match request {
            Request::ReadCoils(a, q) => Response::ReadCoils(coils[range(a, q)?].to_vec()),
            Request::ReadDiscreteInputs(a, q) => {
                let r = range(a, q)?;
                Response::ReadDiscreteInputs(r.map(|i| discrete_input(i as u16)).collect())
            }
            Request::ReadHoldingRegisters(a, q) => {
                Response::ReadHoldingRegisters(holding[range(a, q)?].to_vec())
            }
            Request::ReadInputRegisters(a, q) => {
                let r = range(a, q)?;
                Response::ReadInputRegisters(r.map(|i| input_register(i as u16)).collect())
            }
            Request::WriteSingleCoil(a, v) => {
                coils[range(a, 1)?.start] = v;
                Response::WriteSingleCoil(a, v)
            }
            Request::WriteSingleRegister(a, v) => {
                holding[range(a, 1)?.start] = v;
                Response::WriteSingleRegister(a, v)
            }
            Request::WriteMultipleCoils(a, values) => {
                let r = range(a, values.len() as u16)?;
                coils[r].copy_from_slice(&values);
                Response::WriteMultipleCoils(a, values.len() as u16)
            }
            Request::WriteMultipleRegisters(a, values) => {
                let r = range(a, values.len() as u16)?;
                holding[r].copy_from_slice(&values);
                Response::WriteMultipleRegisters(a, values.len() as u16)
            }
            Request::MaskWriteRegister(a, and, or) => {
                let i = range(a, 1)?.start;
                holding[i] = (holding[i] & and) | (or & !and);
                Response::MaskWriteRegister(a, and, or)
            }
            Request::ReadWriteMultipleRegisters(ra, rq, wa, values) => {
                let w = range(wa, values.len() as u16)?;
                holding[w].copy_from_slice(&values);
                Response::ReadWriteMultipleRegisters(holding[range(ra, rq)?].to_vec())
            }
            Request::ReportServerId => {
                Response::ReportServerId(0x2a, true, b"otwatch-sim".to_vec())
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        })
    }
}

impl tokio_modbus::server::Service for Plc {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        ready(self.handle(request.request))
    }
}

/// Starts a PLC serving Modbus/TCP on a free loopback port, for as long as the runtime runs.
pub async fn serve_tcp() -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let plc = std::sync::Arc::new(Plc::default());
    let server = tokio_modbus::server::tcp::Server::new(listener);
    tokio::spawn(async move {
        let on_connected = |stream, socket_addr| {
            let plc = plc.clone();
            async move {
                tokio_modbus::server::tcp::accept_tcp_connection(stream, socket_addr, |_| {
                    Ok(Some(plc.clone()))
                })
            }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    Ok(addr)
}
