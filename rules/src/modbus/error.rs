//! Every way a Modbus frame can be wrong, named.
//!
//! The same enum is the vocabulary of protocol-anomaly events: the agent counts decode errors by
//! [`DecodeError::kind`] and the detectors turn some of them into alerts.

use serde::Serialize;

/// A reason a Modbus frame could not be decoded.
///
/// Decoding never panics; each malformed frame yields exactly one of these and decoding goes on
/// with the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ended before a field the function requires.
    #[error("frame too short: {needed} bytes needed, {present} present")]
    Truncated {
        /// Bytes the decoder needed at the point it stopped.
        needed: usize,
        /// Bytes the frame actually had.
        present: usize,
    },
    /// The MBAP protocol identifier is not 0 (Modbus).
    #[error("MBAP protocol id is {0:#06x}, not 0")]
    InvalidProtocolId(u16),
    /// The MBAP length field is below 2 (a unit id and a function code).
    #[error("MBAP length {0} is below the minimum of 2")]
    LengthTooSmall(u16),
    /// The MBAP length field is above 254 (a unit id and a 253-byte PDU).
    #[error("MBAP length {0} is above the maximum of 254")]
    LengthTooLarge(u16),
    /// The MBAP length field disagrees with the bytes the datagram or stream end carried.
    #[error("MBAP length announces {declared} bytes, {present} present")]
    LengthMismatch {
        /// Bytes the length field announced after itself.
        declared: usize,
        /// Bytes that were there.
        present: usize,
    },
    /// A byte count field disagrees with the quantity or the data that follows.
    #[error("byte count {declared} disagrees with the {expected} bytes expected")]
    ByteCountMismatch {
        /// The byte count carried in the frame.
        declared: usize,
        /// The byte count the quantity or the frame length implies.
        expected: usize,
    },
    /// A quantity of coils or registers outside the range the specification allows.
    #[error("quantity {quantity} outside {min}..={max}")]
    QuantityOutOfRange {
        /// The quantity carried in the frame.
        quantity: u16,
        /// Smallest allowed quantity.
        min: u16,
        /// Largest allowed quantity.
        max: u16,
    },
    /// Start address plus quantity runs past address 65535.
    #[error("address {address} plus quantity {quantity} runs past 65535")]
    AddressOverflow {
        /// First address.
        address: u16,
        /// Number of items.
        quantity: u16,
    },
    /// A function code that is neither public, user-defined nor reserved.
    #[error("unknown function code {0}")]
    UnknownFunction(u8),
    /// A request carried a function code with the exception bit (0x80) set.
    #[error("request with exception function code {0:#04x}")]
    ExceptionInRequest(u8),
    /// An exception response carried a code outside 1-8, 10, 11.
    #[error("invalid exception code {0}")]
    InvalidExceptionCode(u8),
    /// Bytes left over after the function's fields.
    #[error("{0} trailing bytes after the PDU")]
    TrailingBytes(usize),
    /// A Write Single Coil value other than 0x0000 or 0xFF00.
    #[error("coil value {0:#06x} is neither 0x0000 nor 0xFF00")]
    InvalidCoilValue(u16),
    /// An Encapsulated Interface Transport type other than 13 or 14.
    #[error("unknown MEI type {0}")]
    UnknownMeiType(u8),
    /// A Read Device Identification code outside 1-4.
    #[error("invalid read device id code {0}")]
    InvalidDeviceIdCode(u8),
    /// A file record reference type other than 6.
    #[error("invalid file record reference type {0}")]
    InvalidReferenceType(u8),
    /// A Modbus RTU frame whose CRC-16 does not match its contents.
    #[error("RTU CRC mismatch")]
    CrcMismatch,
    /// A response whose function differs from its request's.
    #[error("response function {response} answers a request with function {request}")]
    FunctionMismatch {
        /// The request's function code.
        request: u8,
        /// The response's function code (exception bit cleared).
        response: u8,
    },
    /// A write response that does not echo the address, value or quantity written.
    #[error("write response does not echo the request")]
    EchoMismatch,
}

impl DecodeError {
    /// A stable, lowercase label for metrics, summaries and alert rules.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::InvalidProtocolId(_) => "invalid_protocol_id",
            Self::LengthTooSmall(_) => "length_too_small",
            Self::LengthTooLarge(_) => "length_too_large",
            Self::LengthMismatch { .. } => "length_mismatch",
            Self::ByteCountMismatch { .. } => "byte_count_mismatch",
            Self::QuantityOutOfRange { .. } => "quantity_out_of_range",
            Self::AddressOverflow { .. } => "address_overflow",
            Self::UnknownFunction(_) => "unknown_function",
            Self::ExceptionInRequest(_) => "exception_in_request",
            Self::InvalidExceptionCode(_) => "invalid_exception_code",
            Self::TrailingBytes(_) => "trailing_bytes",
            Self::InvalidCoilValue(_) => "invalid_coil_value",
            Self::UnknownMeiType(_) => "unknown_mei_type",
            Self::InvalidDeviceIdCode(_) => "invalid_device_id_code",
            Self::InvalidReferenceType(_) => "invalid_reference_type",
            Self::CrcMismatch => "crc_mismatch",
            Self::FunctionMismatch { .. } => "function_mismatch",
            Self::EchoMismatch => "echo_mismatch",
        }
    }

    /// Every label [`DecodeError::kind`] can return, for pre-registering metrics.
    pub const KINDS: &'static [&'static str] = &[
        "truncated",
        "invalid_protocol_id",
        "length_too_small",
        "length_too_large",
        "length_mismatch",
        "byte_count_mismatch",
        "quantity_out_of_range",
        "address_overflow",
        "unknown_function",
        "exception_in_request",
        "invalid_exception_code",
        "trailing_bytes",
        "invalid_coil_value",
        "unknown_mei_type",
        "invalid_device_id_code",
        "invalid_reference_type",
        "crc_mismatch",
        "function_mismatch",
        "echo_mismatch",
    ];
}

impl Serialize for DecodeError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.kind())
    }
}
