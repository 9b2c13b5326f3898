//! A PLC running the tank process, served over Modbus/TCP by tokio-modbus.
//!
//! Register map (each table holds [`POINTS`] addresses; beyond is illegal-data-address):
//! - coils: 0 pump running, 1 automatic mode, 2 drain valve open
//! - discrete inputs: 0 high-level switch, 1 low-level switch, 2 overflow
//! - input registers: 0 level (mm), 1 inflow, 2 outflow (tenths of mm/s), 3 temperature (0.1 C)
//! - holding registers: 0 high setpoint, 1 low setpoint, 2 pump speed (%)
//!
//! Besides reads and writes it answers diagnostics (8/0 echo; 8/1 restarts communications;
//! 8/4 silences it for [`LISTEN_ONLY`], like a device in listen-only mode), report server id
//! (17) and read device identification (43/14). Other functions get illegal-function, unit ids
//! other than its own get gateway-target-failed. Its firmware has a flaw: a write of a value
//! of 0x8000 or more to holding register [`FRAGILE`] crashes it for [`CRASH`], during which
//! it answers nothing (the classic one-packet denial of service).

use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_modbus::prelude::{
    ConformityLevel, DeviceIdObject, ReadCode, ReadDeviceIdentificationResponse,
};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use super::tank::Tank;

/// Addresses each table holds.
pub const POINTS: u16 = 16;
/// How long force-listen-only (8/4) silences the PLC.
pub const LISTEN_ONLY: Duration = Duration::from_secs(3);
/// The holding register whose write of a large value crashes the PLC.
pub const FRAGILE: u16 = 15;
/// How long the crash lasts: longer than otwatch lets a device be silent (20 s).
pub const CRASH: Duration = Duration::from_secs(25);

/// One simulated PLC.
#[derive(Debug)]
pub struct ProcessPlc {
    unit: u8,
    product: &'static str,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tank: Tank,
    stepped: Instant,
    silent_until: Option<Instant>,
}

fn range(address: u16, quantity: u16) -> Result<std::ops::Range<u16>, ExceptionCode> {
    let end = u32::from(address) + u32::from(quantity);
    if quantity == 0 || end > u32::from(POINTS) {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(address..end as u16)
}

impl ProcessPlc {
    /// A PLC answering as `unit`, naming itself `product` in its identification.
    pub fn new(unit: u8, product: &'static str) -> Self {
        Self {
            unit,
            product,
            state: Mutex::new(State {
                tank: Tank::default(),
                stepped: Instant::now(),
                silent_until: None,
            }),
        }
    }

    /// The process as it is now.
    pub fn tank(&self) -> Tank {
        self.state
            .lock()
            .map(|mut s| {
                s.advance();
                s.tank.clone()
            })
            .unwrap_or_default()
    }

    fn handle(&self, unit: u8, request: Request<'_>) -> Result<Option<Response>, ExceptionCode> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        state.advance();
        if state.silent_until.is_some_and(|t| Instant::now() < t) {
            return Ok(None);
        }
        if unit != self.unit && unit != 0 {
            return Err(ExceptionCode::GatewayTargetDevice);
        }
        let tank = &mut state.tank;
        let coil = |tank: &Tank, i: u16| match i {
            0 => tank.pump,
            1 => tank.auto,
            2 => tank.drain,
            _ => false,
        };
        let input = |tank: &Tank, i: u16| match i {
            0 => tank.level >= f64::from(tank.high_setpoint),
            1 => tank.level <= f64::from(tank.low_setpoint),
            2 => tank.level > 1000.0,
            _ => false,
        };
        let input_register = |tank: &Tank, i: u16| match i {
            0 => tank.level.round() as u16,
            1 => (tank.inflow() * 10.0).round() as u16,
            2 => (tank.outflow() * 10.0).round() as u16,
            3 => tank.temperature.round() as u16,
            _ => 0,
        };
        let holding = |tank: &Tank, i: u16| match i {
            0 => tank.high_setpoint,
            1 => tank.low_setpoint,
            2 => tank.pump_speed,
            _ => 0,
        };
        let set_coil = |tank: &mut Tank, i: u16, v: bool| match i {
            0 => tank.pump = v,
            1 => tank.auto = v,
            2 => tank.drain = v,
            _ => {}
        };
        let set_holding = |tank: &mut Tank, i: u16, v: u16| match i {
            0 => tank.high_setpoint = v,
            1 => tank.low_setpoint = v,
            2 => tank.pump_speed = v,
            _ => {}
        };
        let response = match request {
            Request::ReadCoils(a, q) => {
                Response::ReadCoils(range(a, q)?.map(|i| coil(tank, i)).collect())
            }
            Request::ReadDiscreteInputs(a, q) => {
                Response::ReadDiscreteInputs(range(a, q)?.map(|i| input(tank, i)).collect())
            }
            Request::ReadInputRegisters(a, q) => Response::ReadInputRegisters(
                range(a, q)?.map(|i| input_register(tank, i)).collect(),
            ),
            Request::ReadHoldingRegisters(a, q) => {
                Response::ReadHoldingRegisters(range(a, q)?.map(|i| holding(tank, i)).collect())
            }
            Request::WriteSingleCoil(a, v) => {
                set_coil(tank, range(a, 1)?.start, v);
                Response::WriteSingleCoil(a, v)
            }
            Request::WriteMultipleCoils(a, values) => {
                for (i, v) in range(a, values.len() as u16)?.zip(values.iter()) {
                    set_coil(tank, i, *v);
                }
                Response::WriteMultipleCoils(a, values.len() as u16)
            }
            Request::WriteSingleRegister(FRAGILE, 0x8000..) => {
                state.silent_until = Some(Instant::now() + CRASH);
                return Ok(None);
            }
            Request::WriteSingleRegister(a, v) => {
                set_holding(tank, range(a, 1)?.start, v);
                Response::WriteSingleRegister(a, v)
            }
            Request::WriteMultipleRegisters(a, values) => {
                for (i, v) in range(a, values.len() as u16)?.zip(values.iter()) {
                    set_holding(tank, i, *v);
                }
                Response::WriteMultipleRegisters(a, values.len() as u16)
            }
            Request::ReportServerId => {
                Response::ReportServerId(self.unit, true, self.product.as_bytes().to_vec())
            }
            Request::Custom(0x08, data) => {
                let sub = data.get(..2).map(|s| u16::from_be_bytes([s[0], s[1]]));
                match sub {
                    Some(0x0000) | Some(0x0001) | Some(0x000A) => {
                        if sub == Some(0x0001) {
                            state.silent_until = None;
                        }
                        Response::Custom(0x08, data.into_owned().into())
                    }
                    Some(0x0004) => {
                        state.silent_until = Some(Instant::now() + LISTEN_ONLY);
                        return Ok(None);
                    }
                    _ => return Err(ExceptionCode::IllegalFunction),
                }
            }
            Request::ReadDeviceIdentification(read_code, _) => {
                Response::ReadDeviceIdentification(device_identification(read_code, self.product))
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        Ok(Some(response))
    }
}

impl State {
    fn advance(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.stepped).as_secs_f64();
        // Small steps, so a long gap between requests still integrates smoothly.
        let steps = (dt / 0.1).ceil().clamp(1.0, 10_000.0);
        for _ in 0..steps as u32 {
            self.tank.step(dt / steps);
        }
        self.stepped = now;
    }
}

/// A basic-category 43/14 answer: vendor, product code, revision.
fn device_identification(read_code: ReadCode, product: &str) -> ReadDeviceIdentificationResponse {
    let object = |id: u8, value: &str| DeviceIdObject {
        id,
        value: value.as_bytes().to_vec().into(),
    };
    ReadDeviceIdentificationResponse {
        read_code,
        conformity_level: ConformityLevel::BasicIdentificationStreamOnly,
        more_follows: false,
        next_object_id: 0,
        device_id_objects: vec![object(0, "otwatch"), object(1, product), object(2, "1.0")],
    }
}

impl tokio_modbus::server::Service for ProcessPlc {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        ready(self.handle(request.slave, request.request))
    }
}

/// Serves `plc` on `listen` for as long as the runtime runs; returns the bound address.
pub async fn serve(listen: SocketAddr, plc: Arc<ProcessPlc>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
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
