//! Modbus decoding: MBAP and RTU framing, request and response PDUs for every public function
//! code, vendor codes by name, and a named error for every way a frame can be wrong.
//!
//! Everything here is zero-copy: decoded values borrow from the frame.

mod diagnostic;
mod error;
mod exception;
mod function;
mod mbap;
mod mei;
mod reader;
mod request;
mod response;
mod rtu;
mod umas;
mod values;

pub use diagnostic::DiagnosticSubFunction;
pub use error::DecodeError;
pub use exception::ExceptionCode;
pub use function::{FunctionClass, FunctionCode, FunctionKind};
pub use mbap::{MAX_ADU_LEN, MBAP_LEN, MbapHeader};
pub use mei::{DeviceIdCode, DeviceIdObjects, DeviceIdRequest, DeviceIdResponse, ObjectId};
pub use request::{FileRecordRef, FileRecordRefs, Request};
pub use response::Response;
pub use rtu::{MAX_RTU_LEN, MIN_RTU_LEN, RtuFrame, crc16};
pub use umas::UmasFunction;
pub use values::{Bits, Registers};

use serde::Serialize;

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Read-write single bits.
    Coils,
    /// Read-only single bits.
    DiscreteInputs,
    /// Read-write 16-bit registers.
    HoldingRegisters,
    /// Read-only 16-bit registers.
    InputRegisters,
}

impl Table {
    /// The table functions 1-4 read (anything else maps to holding registers).
    fn for_read(code: u8) -> Self {
        match code {
            1 => Self::Coils,
            2 => Self::DiscreteInputs,
            4 => Self::InputRegisters,
            _ => Self::HoldingRegisters,
        }
    }

    /// The function that reads this table.
    pub fn read_function(self) -> FunctionCode {
        match self {
            Self::Coils => FunctionCode::READ_COILS,
            Self::DiscreteInputs => FunctionCode::READ_DISCRETE_INPUTS,
            Self::HoldingRegisters => FunctionCode::READ_HOLDING_REGISTERS,
            Self::InputRegisters => FunctionCode::READ_INPUT_REGISTERS,
        }
    }

    /// The table's snake_case name, as in the policy language.
    pub fn name(self) -> &'static str {
        match self {
            Self::Coils => "coils",
            Self::DiscreteInputs => "discrete_inputs",
            Self::HoldingRegisters => "holding_registers",
            Self::InputRegisters => "input_registers",
        }
    }
}

/// A Modbus/TCP or Modbus/UDP application data unit: MBAP header and PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adu<'a> {
    /// The validated header.
    pub header: MbapHeader,
    /// Function code and data.
    pub pdu: &'a [u8],
}

impl<'a> Adu<'a> {
    /// Splits the first complete ADU off `bytes`, returning it and what follows.
    ///
    /// Fails with the header's error, or with [`DecodeError::LengthMismatch`] when fewer bytes
    /// are present than the length field announces.
    pub fn split(bytes: &'a [u8]) -> Result<(Self, &'a [u8]), DecodeError> {
        let header = MbapHeader::decode(bytes)?;
        let adu_len = header.adu_len();
        match (bytes.get(MBAP_LEN..adu_len), bytes.get(adu_len..)) {
            (Some(pdu), Some(rest)) => Ok((Self { header, pdu }, rest)),
            _ => Err(DecodeError::LengthMismatch {
                declared: usize::from(header.length),
                present: bytes.len().saturating_sub(6),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
