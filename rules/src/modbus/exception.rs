//! Exception codes a server returns instead of a normal response.

use serde::Serialize;
use std::fmt;

use super::DecodeError;

/// An exception code from an exception response (function code | 0x80), 1-8, 10 or 11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExceptionCode(u8);

impl ExceptionCode {
    /// 1: the function is not supported by the server.
    pub const ILLEGAL_FUNCTION: Self = Self(1);
    /// 2: the address is not valid on the server.
    pub const ILLEGAL_DATA_ADDRESS: Self = Self(2);
    /// 3: a value in the request is not allowed.
    pub const ILLEGAL_DATA_VALUE: Self = Self(3);
    /// 4: the server failed while performing the action.
    pub const SERVER_DEVICE_FAILURE: Self = Self(4);
    /// 5: the request was accepted and will take long to process.
    pub const ACKNOWLEDGE: Self = Self(5);
    /// 6: the server is busy with a long-duration command.
    pub const SERVER_DEVICE_BUSY: Self = Self(6);

    /// Recognises an exception code byte.
    pub fn new(code: u8) -> Result<Self, DecodeError> {
        match code {
            1..=8 | 10 | 11 => Ok(Self(code)),
            _ => Err(DecodeError::InvalidExceptionCode(code)),
        }
    }

    /// The code as carried on the wire.
    pub fn code(self) -> u8 {
        self.0
    }

    /// A stable snake_case name.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "illegal_function",
            2 => "illegal_data_address",
            3 => "illegal_data_value",
            4 => "server_device_failure",
            5 => "acknowledge",
            6 => "server_device_busy",
            7 => "negative_acknowledge",
            8 => "memory_parity_error",
            10 => "gateway_path_unavailable",
            _ => "gateway_target_failed_to_respond",
        }
    }
}

impl fmt::Display for ExceptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl Serialize for ExceptionCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.0)
    }
}
