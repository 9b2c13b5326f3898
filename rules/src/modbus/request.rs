//! Request PDUs (client to server), decoded per function code.
//!
//! Decoding checks every field the specification constrains (quantities, byte counts, coil
//! values, reference types) so a [`Request`] that exists is well-formed.

use super::diagnostic::DiagnosticSubFunction;
use super::function::{FunctionClass, FunctionCode};
use super::mei::{DeviceIdRequest, MEI_CANOPEN, MEI_READ_DEVICE_ID};
use super::reader::Reader;
use super::umas::UmasFunction;
use super::values::{Bits, Registers};
use super::{DecodeError, Table};

/// Largest number of coils or inputs one read may ask for.
pub const MAX_READ_BITS: u16 = 2000;
/// Largest number of registers one read may ask for.
pub const MAX_READ_REGISTERS: u16 = 125;
/// Largest number of coils one write may carry.
pub const MAX_WRITE_COILS: u16 = 1968;
/// Largest number of registers one write may carry.
pub const MAX_WRITE_REGISTERS: u16 = 123;
/// Largest number of registers function 23 may write.
pub const MAX_READ_WRITE_REGISTERS: u16 = 121;

/// A decoded request PDU, borrowing its variable-length data from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// 1-4: read `quantity` items of `table` from `address`.
    Read {
        /// Which of the four tables.
        table: Table,
        /// First address.
        address: u16,
        /// Number of coils, inputs or registers.
        quantity: u16,
    },
    /// 5: set one coil.
    WriteSingleCoil {
        /// Coil address.
        address: u16,
        /// The new state.
        value: bool,
    },
    /// 6: set one holding register.
    WriteSingleRegister {
        /// Register address.
        address: u16,
        /// The new value.
        value: u16,
    },
    /// 7: read the eight exception status outputs.
    ReadExceptionStatus,
    /// 8: a diagnostics sub-function with its data words.
    Diagnostics {
        /// What is asked.
        sub_function: DiagnosticSubFunction,
        /// The data field (usually one word).
        data: Registers<'a>,
    },
    /// 11: read the communication event counter.
    GetCommEventCounter,
    /// 12: read the communication event log.
    GetCommEventLog,
    /// 15: set consecutive coils.
    WriteMultipleCoils {
        /// First coil.
        address: u16,
        /// The new states, one per coil.
        values: Bits<'a>,
    },
    /// 16: set consecutive holding registers.
    WriteMultipleRegisters {
        /// First register.
        address: u16,
        /// The new values.
        values: Registers<'a>,
    },
    /// 17: ask the server to describe itself.
    ReportServerId,
    /// 20: read file records; each sub-request is (file, record, length).
    ReadFileRecord {
        /// The validated 7-byte sub-requests.
        sub_requests: FileRecordRefs<'a>,
    },
    /// 21: write file records.
    WriteFileRecord {
        /// The validated sub-records with their data.
        records: FileRecordRefs<'a>,
    },
    /// 22: `register = (register AND and_mask) OR (or_mask AND NOT and_mask)`.
    MaskWriteRegister {
        /// Register address.
        address: u16,
        /// Bits kept.
        and_mask: u16,
        /// Bits set among those not kept.
        or_mask: u16,
    },
    /// 23: write registers, then read registers, in one transaction.
    ReadWriteMultipleRegisters {
        /// First register read.
        read_address: u16,
        /// Number of registers read.
        read_quantity: u16,
        /// First register written.
        write_address: u16,
        /// The values written.
        values: Registers<'a>,
    },
    /// 24: read a FIFO queue of registers.
    ReadFifoQueue {
        /// The FIFO pointer register.
        address: u16,
    },
    /// 43/14: Read Device Identification.
    ReadDeviceId(DeviceIdRequest),
    /// 43/13: CANopen General Reference, carried opaquely.
    CanOpen {
        /// Everything after the MEI type.
        data: &'a [u8],
    },
    /// 90: Schneider UMAS.
    Umas {
        /// The session (pairing) key.
        session: u8,
        /// The UMAS function.
        function: UmasFunction,
        /// Everything after the UMAS function byte.
        data: &'a [u8],
    },
    /// Other user-defined or reserved codes (Modicon 125/126 among them): carried opaquely.
    Opaque {
        /// The function code.
        function: FunctionCode,
        /// Everything after the function code.
        data: &'a [u8],
    },
}

impl<'a> Request<'a> {
    /// Decodes a request PDU (function code first) that must end where its fields end.
    pub fn decode(pdu: &'a [u8]) -> Result<Self, DecodeError> {
        match Self::decode_prefix(pdu)? {
            (request, 0) => Ok(request),
            (_, extra) => Err(DecodeError::TrailingBytes(extra)),
        }
    }

    /// Decodes a request PDU, tolerating bytes after its fields: returns the request and how
    /// many bytes trail it. Crafted frames often pad a valid command; the command still counts.
    pub fn decode_prefix(pdu: &'a [u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(pdu);
        let code = r.u8()?;
        if code & 0x80 != 0 {
            return Err(DecodeError::ExceptionInRequest(code));
        }
        let function = FunctionCode::new(code)?;
        let request = match code {
            1..=4 => {
                let table = Table::for_read(code);
                let address = r.u16()?;
                let quantity = r.u16()?;
                let max = match table {
                    Table::Coils | Table::DiscreteInputs => MAX_READ_BITS,
                    Table::HoldingRegisters | Table::InputRegisters => MAX_READ_REGISTERS,
                };
                check_range(address, quantity, max)?;
                Self::Read {
                    table,
                    address,
                    quantity,
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
            7 => Self::ReadExceptionStatus,
            8 => {
                let sub_function = DiagnosticSubFunction::new(r.u16()?);
                let data = words(r.rest())?;
                Self::Diagnostics { sub_function, data }
            }
            11 => Self::GetCommEventCounter,
            12 => Self::GetCommEventLog,
            15 => {
                let address = r.u16()?;
                let quantity = r.u16()?;
                check_range(address, quantity, MAX_WRITE_COILS)?;
                let bytes = counted(&mut r, usize::from(quantity).div_ceil(8))?;
                Self::WriteMultipleCoils {
                    address,
                    values: Bits::new(bytes, usize::from(quantity)),
                }
            }
            16 => {
                let address = r.u16()?;
                let quantity = r.u16()?;
                check_range(address, quantity, MAX_WRITE_REGISTERS)?;
                let bytes = counted(&mut r, usize::from(quantity) * 2)?;
                Self::WriteMultipleRegisters {
                    address,
                    values: Registers::new(bytes).ok_or(DecodeError::TrailingBytes(1))?,
                }
            }
            17 => Self::ReportServerId,
            20 => Self::ReadFileRecord {
                sub_requests: FileRecordRefs::decode(&mut r, false)?,
            },
            21 => Self::WriteFileRecord {
                records: FileRecordRefs::decode(&mut r, true)?,
            },
            22 => Self::MaskWriteRegister {
                address: r.u16()?,
                and_mask: r.u16()?,
                or_mask: r.u16()?,
            },
            23 => {
                let read_address = r.u16()?;
                let read_quantity = r.u16()?;
                check_range(read_address, read_quantity, MAX_READ_REGISTERS)?;
                let write_address = r.u16()?;
                let write_quantity = r.u16()?;
                check_range(write_address, write_quantity, MAX_READ_WRITE_REGISTERS)?;
                let bytes = counted(&mut r, usize::from(write_quantity) * 2)?;
                Self::ReadWriteMultipleRegisters {
                    read_address,
                    read_quantity,
                    write_address,
                    values: Registers::new(bytes).ok_or(DecodeError::TrailingBytes(1))?,
                }
            }
            24 => Self::ReadFifoQueue { address: r.u16()? },
            43 => match r.u8()? {
                MEI_READ_DEVICE_ID => Self::ReadDeviceId(DeviceIdRequest::decode(&mut r)?),
                MEI_CANOPEN => Self::CanOpen { data: r.rest() },
                other => return Err(DecodeError::UnknownMeiType(other)),
            },
            90 => Self::Umas {
                session: r.u8()?,
                function: UmasFunction::new(r.u8()?),
                data: r.rest(),
            },
            _ => Self::Opaque {
                function,
                data: r.rest(),
            },
        };
        Ok((request, r.remaining()))
    }

    /// The function code.
    pub fn function(&self) -> FunctionCode {
        match self {
            Self::Read { table, .. } => table.read_function(),
            Self::WriteSingleCoil { .. } => FunctionCode::WRITE_SINGLE_COIL,
            Self::WriteSingleRegister { .. } => FunctionCode::WRITE_SINGLE_REGISTER,
            Self::ReadExceptionStatus => FunctionCode::READ_EXCEPTION_STATUS,
            Self::Diagnostics { .. } => FunctionCode::DIAGNOSTICS,
            Self::GetCommEventCounter => FunctionCode::GET_COMM_EVENT_COUNTER,
            Self::GetCommEventLog => FunctionCode::GET_COMM_EVENT_LOG,
            Self::WriteMultipleCoils { .. } => FunctionCode::WRITE_MULTIPLE_COILS,
            Self::WriteMultipleRegisters { .. } => FunctionCode::WRITE_MULTIPLE_REGISTERS,
            Self::ReportServerId => FunctionCode::REPORT_SERVER_ID,
            Self::ReadFileRecord { .. } => FunctionCode::READ_FILE_RECORD,
            Self::WriteFileRecord { .. } => FunctionCode::WRITE_FILE_RECORD,
            Self::MaskWriteRegister { .. } => FunctionCode::MASK_WRITE_REGISTER,
            Self::ReadWriteMultipleRegisters { .. } => FunctionCode::READ_WRITE_MULTIPLE_REGISTERS,
            Self::ReadFifoQueue { .. } => FunctionCode::READ_FIFO_QUEUE,
            Self::ReadDeviceId(_) | Self::CanOpen { .. } => FunctionCode::ENCAPSULATED_INTERFACE,
            Self::Umas { .. } => FunctionCode::UMAS,
            Self::Opaque { function, .. } => *function,
        }
    }

    /// The same request, if it borrows nothing from its frame (reads, single writes, and the
    /// other fixed-size requests): it can then be kept without keeping the bytes.
    pub fn detached(&self) -> Option<Request<'static>> {
        Some(match *self {
            Self::Read {
                table,
                address,
                quantity,
            } => Request::Read {
                table,
                address,
                quantity,
            },
            Self::WriteSingleCoil { address, value } => Request::WriteSingleCoil { address, value },
            Self::WriteSingleRegister { address, value } => {
                Request::WriteSingleRegister { address, value }
            }
            Self::ReadExceptionStatus => Request::ReadExceptionStatus,
            Self::GetCommEventCounter => Request::GetCommEventCounter,
            Self::GetCommEventLog => Request::GetCommEventLog,
            Self::ReportServerId => Request::ReportServerId,
            Self::MaskWriteRegister {
                address,
                and_mask,
                or_mask,
            } => Request::MaskWriteRegister {
                address,
                and_mask,
                or_mask,
            },
            Self::ReadFifoQueue { address } => Request::ReadFifoQueue { address },
            Self::ReadDeviceId(r) => Request::ReadDeviceId(r),
            _ => return None,
        })
    }

    /// The access class, refined past the function code where the body says more (43/14 is
    /// identification, 43/13 is other).
    pub fn class(&self) -> FunctionClass {
        match self {
            Self::ReadDeviceId(_) => FunctionClass::Identification,
            other => other.function().class(),
        }
    }

    /// The sub-function the policy language can name (`"8/1"`, `"43/14"`): a Diagnostics
    /// request's sub-function, an MEI request's type.
    pub fn sub_function(&self) -> Option<u16> {
        match self {
            Self::Diagnostics { sub_function, .. } => Some(sub_function.code()),
            Self::ReadDeviceId(_) => Some(14),
            Self::CanOpen { .. } => Some(13),
            _ => None,
        }
    }

    /// The table, first address and count this request reads, if it reads process data.
    pub fn read_range(&self) -> Option<(Table, u16, u16)> {
        match *self {
            Self::Read {
                table,
                address,
                quantity,
            } => Some((table, address, quantity)),
            Self::ReadWriteMultipleRegisters {
                read_address,
                read_quantity,
                ..
            } => Some((Table::HoldingRegisters, read_address, read_quantity)),
            Self::ReadFifoQueue { address } => Some((Table::HoldingRegisters, address, 1)),
            _ => None,
        }
    }

    /// The table, first address and count this request writes, if it writes process data.
    pub fn write_range(&self) -> Option<(Table, u16, u16)> {
        match *self {
            Self::WriteSingleCoil { address, .. } => Some((Table::Coils, address, 1)),
            Self::WriteSingleRegister { address, .. } | Self::MaskWriteRegister { address, .. } => {
                Some((Table::HoldingRegisters, address, 1))
            }
            Self::WriteMultipleCoils { address, values } => {
                Some((Table::Coils, address, len16(values.len())))
            }
            Self::WriteMultipleRegisters { address, values } => {
                Some((Table::HoldingRegisters, address, len16(values.len())))
            }
            Self::ReadWriteMultipleRegisters {
                write_address,
                values,
                ..
            } => Some((Table::HoldingRegisters, write_address, len16(values.len()))),
            _ => None,
        }
    }
}

fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Checks a quantity against 1..=max and that the range stays inside the 16-bit address space.
fn check_range(address: u16, quantity: u16, max: u16) -> Result<(), DecodeError> {
    if quantity == 0 || quantity > max {
        return Err(DecodeError::QuantityOutOfRange {
            quantity,
            min: 1,
            max,
        });
    }
    if u32::from(address) + u32::from(quantity) > 0x1_0000 {
        return Err(DecodeError::AddressOverflow { address, quantity });
    }
    Ok(())
}

/// Reads a byte count that must equal `expected`, then the bytes it counts.
fn counted<'a>(r: &mut Reader<'a>, expected: usize) -> Result<&'a [u8], DecodeError> {
    let declared = usize::from(r.u8()?);
    if declared != expected {
        return Err(DecodeError::ByteCountMismatch { declared, expected });
    }
    r.take(declared)
}

/// Diagnostics data: a whole number of 16-bit words.
fn words(bytes: &[u8]) -> Result<Registers<'_>, DecodeError> {
    Registers::new(bytes).ok_or(DecodeError::TrailingBytes(1))
}

/// File record references of functions 20 and 21, validated when decoded.
///
/// Each reference is reference type 6, file number, record number and record length (in
/// registers); for writes, the record data follows each reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRecordRefs<'a> {
    bytes: &'a [u8],
    with_data: bool,
}

/// One file record reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRecordRef<'a> {
    /// File number.
    pub file: u16,
    /// First record.
    pub record: u16,
    /// Number of registers.
    pub length: u16,
    /// The data written (empty for reads).
    pub data: Registers<'a>,
}

impl<'a> FileRecordRefs<'a> {
    fn decode(r: &mut Reader<'a>, with_data: bool) -> Result<Self, DecodeError> {
        let declared = usize::from(r.u8()?);
        let present = r.remaining();
        if declared != present {
            return Err(DecodeError::ByteCountMismatch {
                declared,
                expected: present,
            });
        }
        let bytes = r.take(declared)?;
        let refs = Self { bytes, with_data };
        let mut check = Reader::new(bytes);
        while check.remaining() > 0 {
            Self::next_ref(&mut check, with_data)?;
        }
        Ok(refs)
    }

    fn next_ref(r: &mut Reader<'a>, with_data: bool) -> Result<FileRecordRef<'a>, DecodeError> {
        let reference_type = r.u8()?;
        if reference_type != 6 {
            return Err(DecodeError::InvalidReferenceType(reference_type));
        }
        let file = r.u16()?;
        let record = r.u16()?;
        let length = r.u16()?;
        let data = if with_data {
            let bytes = r.take(usize::from(length) * 2)?;
            Registers::new(bytes).unwrap_or_default()
        } else {
            Registers::default()
        };
        Ok(FileRecordRef {
            file,
            record,
            length,
            data,
        })
    }

    /// The references in order.
    pub fn iter(&self) -> impl Iterator<Item = FileRecordRef<'a>> + 'a {
        let mut r = Reader::new(self.bytes);
        let with_data = self.with_data;
        std::iter::from_fn(move || {
            if r.remaining() == 0 {
                return None;
            }
            Self::next_ref(&mut r, with_data).ok()
        })
    }
}
