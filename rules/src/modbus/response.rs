//! Response PDUs (server to client), decoded per function code, exceptions included.

use super::diagnostic::DiagnosticSubFunction;
use super::exception::ExceptionCode;
use super::function::FunctionCode;
use super::mei::{DeviceIdResponse, MEI_CANOPEN, MEI_READ_DEVICE_ID};
use super::reader::Reader;
use super::values::{Bits, Registers};
use super::{DecodeError, Table};

/// Largest number of FIFO registers one response may carry.
pub const MAX_FIFO_COUNT: u16 = 31;

/// A decoded response PDU, borrowing its variable-length data from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    /// 1, 2: coil or input states (the request says how many bits are meaningful).
    ReadBits {
        /// Coils or discrete inputs.
        table: Table,
        /// The states, padding included until joined with the request.
        values: Bits<'a>,
    },
    /// 3, 4, 23: register values.
    ReadRegisters {
        /// The function that read them (3, 4 or 23).
        function: FunctionCode,
        /// The values.
        values: Registers<'a>,
    },
    /// 5: echo of the coil written.
    WriteSingleCoil {
        /// Coil address.
        address: u16,
        /// The state written.
        value: bool,
    },
    /// 6: echo of the register written.
    WriteSingleRegister {
        /// Register address.
        address: u16,
        /// The value written.
        value: u16,
    },
    /// 7: the eight exception status outputs.
    ReadExceptionStatus {
        /// One bit per output.
        status: u8,
    },
    /// 8: the diagnostics answer.
    Diagnostics {
        /// The sub-function answered.
        sub_function: DiagnosticSubFunction,
        /// Its data words.
        data: Registers<'a>,
    },
    /// 11: status word and event counter.
    GetCommEventCounter {
        /// 0xFFFF while a previous command is still being processed.
        status: u16,
        /// Successful message count.
        event_count: u16,
    },
    /// 12: status, counters and the event bytes.
    GetCommEventLog {
        /// 0xFFFF while busy.
        status: u16,
        /// Event counter.
        event_count: u16,
        /// Message counter.
        message_count: u16,
        /// Up to 64 event bytes, most recent first.
        events: &'a [u8],
    },
    /// 15: coils written.
    WriteMultipleCoils {
        /// First coil.
        address: u16,
        /// Number of coils.
        quantity: u16,
    },
    /// 16: registers written.
    WriteMultipleRegisters {
        /// First register.
        address: u16,
        /// Number of registers.
        quantity: u16,
    },
    /// 17: the device-specific server id, run indicator and additional data.
    ReportServerId {
        /// Everything after the byte count.
        data: &'a [u8],
    },
    /// 20: the records read, validated sub-response by sub-response.
    ReadFileRecord {
        /// The sub-responses (length, reference type, data) as sent.
        data: &'a [u8],
    },
    /// 21: echo of the write.
    WriteFileRecord {
        /// The echoed sub-records.
        data: &'a [u8],
    },
    /// 22: echo of the mask write.
    MaskWriteRegister {
        /// Register address.
        address: u16,
        /// Bits kept.
        and_mask: u16,
        /// Bits set.
        or_mask: u16,
    },
    /// 24: the FIFO contents.
    ReadFifoQueue {
        /// Queued register values.
        values: Registers<'a>,
    },
    /// 43/14: device identification objects.
    ReadDeviceId(DeviceIdResponse<'a>),
    /// 43/13: CANopen answer, carried opaquely.
    CanOpen {
        /// Everything after the MEI type.
        data: &'a [u8],
    },
    /// 90: UMAS answer.
    Umas {
        /// The session key echoed.
        session: u8,
        /// 0xFE for success, 0xFD for failure.
        status: u8,
        /// Everything after the status.
        data: &'a [u8],
    },
    /// Other user-defined or reserved codes: carried opaquely.
    Opaque {
        /// The function code.
        function: FunctionCode,
        /// Everything after the function code.
        data: &'a [u8],
    },
    /// Function | 0x80: the server refused.
    Exception {
        /// The function refused.
        function: FunctionCode,
        /// Why.
        code: ExceptionCode,
    },
}

impl<'a> Response<'a> {
    /// Decodes a response PDU (function code first) that must end where its fields end.
    pub fn decode(pdu: &'a [u8]) -> Result<Self, DecodeError> {
        match Self::decode_prefix(pdu)? {
            (response, 0) => Ok(response),
            (_, extra) => Err(DecodeError::TrailingBytes(extra)),
        }
    }

    /// Decodes a response PDU, tolerating bytes after its fields: returns the response and how
    /// many bytes trail it.
    pub fn decode_prefix(pdu: &'a [u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(pdu);
        let raw = r.u8()?;
        let function = FunctionCode::new(raw & 0x7F)?;
        if raw & 0x80 != 0 {
            let code = ExceptionCode::new(r.u8()?)?;
            return Ok((Self::Exception { function, code }, r.remaining()));
        }
        let response = match raw {
            1 | 2 => Self::ReadBits {
                table: Table::for_read(raw),
                values: Bits::all(byte_counted(&mut r)?),
            },
            3 | 4 | 23 => {
                let bytes = byte_counted(&mut r)?;
                Self::ReadRegisters {
                    function,
                    values: Registers::new(bytes).ok_or(DecodeError::ByteCountMismatch {
                        declared: bytes.len(),
                        expected: bytes.len() & !1,
                    })?,
                }
            }
            5 => {
                let address = r.u16()?;
                let value = match r.u16()? {
                    0xFF00 => true,
                    0x0000 => false,
                    other => return Err(DecodeError::InvalidCoilValue(other)),
                };
                Self::WriteSingleCoil { address, value }
            }
            6 => Self::WriteSingleRegister {
                address: r.u16()?,
                value: r.u16()?,
            },
            7 => Self::ReadExceptionStatus { status: r.u8()? },
            8 => {
                let sub_function = DiagnosticSubFunction::new(r.u16()?);
                let data = Registers::new(r.rest()).ok_or(DecodeError::TrailingBytes(1))?;
                Self::Diagnostics { sub_function, data }
            }
            11 => Self::GetCommEventCounter {
                status: r.u16()?,
                event_count: r.u16()?,
            },
            12 => {
                let body = byte_counted(&mut r)?;
                let mut b = Reader::new(body);
                Self::GetCommEventLog {
                    status: b.u16()?,
                    event_count: b.u16()?,
                    message_count: b.u16()?,
                    events: b.rest(),
                }
            }
            15 => Self::WriteMultipleCoils {
                address: r.u16()?,
                quantity: r.u16()?,
            },
            16 => Self::WriteMultipleRegisters {
                address: r.u16()?,
                quantity: r.u16()?,
            },
            17 => Self::ReportServerId {
                data: byte_counted(&mut r)?,
            },
            20 => {
                let data = byte_counted(&mut r)?;
                let mut check = Reader::new(data);
                while check.remaining() > 0 {
                    let len = usize::from(check.u8()?);
                    let sub = check.take(len)?;
                    let mut s = Reader::new(sub);
                    let reference_type = s.u8()?;
                    if reference_type != 6 {
                        return Err(DecodeError::InvalidReferenceType(reference_type));
                    }
                    if !s.remaining().is_multiple_of(2) {
                        return Err(DecodeError::TrailingBytes(1));
                    }
                }
                Self::ReadFileRecord { data }
            }
            21 => Self::WriteFileRecord {
                data: byte_counted(&mut r)?,
            },
            22 => Self::MaskWriteRegister {
                address: r.u16()?,
                and_mask: r.u16()?,
                or_mask: r.u16()?,
            },
            24 => {
                let byte_count = usize::from(r.u16()?);
                let fifo_count = r.u16()?;
                if fifo_count > MAX_FIFO_COUNT {
                    return Err(DecodeError::QuantityOutOfRange {
                        quantity: fifo_count,
                        min: 0,
                        max: MAX_FIFO_COUNT,
                    });
                }
                let expected = 2 + usize::from(fifo_count) * 2;
                if byte_count != expected {
                    return Err(DecodeError::ByteCountMismatch {
                        declared: byte_count,
                        expected,
                    });
                }
                let bytes = r.take(usize::from(fifo_count) * 2)?;
                Self::ReadFifoQueue {
                    values: Registers::new(bytes).unwrap_or_default(),
                }
            }
            43 => match r.u8()? {
                MEI_READ_DEVICE_ID => Self::ReadDeviceId(DeviceIdResponse::decode(&mut r)?),
                MEI_CANOPEN => Self::CanOpen { data: r.rest() },
                other => return Err(DecodeError::UnknownMeiType(other)),
            },
            90 => Self::Umas {
                session: r.u8()?,
                status: r.u8()?,
                data: r.rest(),
            },
            _ => Self::Opaque {
                function,
                data: r.rest(),
            },
        };
        Ok((response, r.remaining()))
    }

    /// The function code (with the exception bit cleared for exceptions).
    pub fn function(&self) -> FunctionCode {
        match self {
            Self::ReadBits { table, .. } => table.read_function(),
            Self::ReadRegisters { function, .. }
            | Self::Opaque { function, .. }
            | Self::Exception { function, .. } => *function,
            Self::WriteSingleCoil { .. } => FunctionCode::WRITE_SINGLE_COIL,
            Self::WriteSingleRegister { .. } => FunctionCode::WRITE_SINGLE_REGISTER,
            Self::ReadExceptionStatus { .. } => FunctionCode::READ_EXCEPTION_STATUS,
            Self::Diagnostics { .. } => FunctionCode::DIAGNOSTICS,
            Self::GetCommEventCounter { .. } => FunctionCode::GET_COMM_EVENT_COUNTER,
            Self::GetCommEventLog { .. } => FunctionCode::GET_COMM_EVENT_LOG,
            Self::WriteMultipleCoils { .. } => FunctionCode::WRITE_MULTIPLE_COILS,
            Self::WriteMultipleRegisters { .. } => FunctionCode::WRITE_MULTIPLE_REGISTERS,
            Self::ReportServerId { .. } => FunctionCode::REPORT_SERVER_ID,
            Self::ReadFileRecord { .. } => FunctionCode::READ_FILE_RECORD,
            Self::WriteFileRecord { .. } => FunctionCode::WRITE_FILE_RECORD,
            Self::MaskWriteRegister { .. } => FunctionCode::MASK_WRITE_REGISTER,
            Self::ReadFifoQueue { .. } => FunctionCode::READ_FIFO_QUEUE,
            Self::ReadDeviceId(_) | Self::CanOpen { .. } => FunctionCode::ENCAPSULATED_INTERFACE,
            Self::Umas { .. } => FunctionCode::UMAS,
        }
    }

    /// The exception code, if the server refused.
    pub fn exception(&self) -> Option<ExceptionCode> {
        match self {
            Self::Exception { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Reads a one-byte count and exactly the bytes it counts, which must end the PDU.
fn byte_counted<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let declared = usize::from(r.u8()?);
    let present = r.remaining();
    if declared != present {
        return Err(DecodeError::ByteCountMismatch {
            declared,
            expected: present,
        });
    }
    r.take(declared)
}
