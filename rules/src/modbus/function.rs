//! Function codes: which exist, what they are called, and what kind of access they are.
//!
//! Vendor and reserved codes are recognised by name rather than dropped: Schneider UMAS on 90 and
//! Modicon programming on 125/126 are exactly what an attacker reprogramming a PLC sends.

use serde::Serialize;
use std::fmt;

use super::DecodeError;

/// A Modbus function code with the exception bit cleared, known to be public, user-defined or
/// reserved (never unassigned or zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionCode(u8);

/// Where a function code sits in the Modbus specification's code space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionKind {
    /// Publicly documented by the Modbus Organization.
    Public,
    /// 65-72 and 100-110: left to vendors for their own functions.
    UserDefined,
    /// Reserved by the specification; some are used by vendors (UMAS on 90, Modicon 125/126).
    Reserved,
}

/// The kind of access a function performs, as the policy language names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionClass {
    /// Reads process data (coils, inputs, registers, FIFO).
    Read,
    /// Changes process data (coils or registers).
    Write,
    /// Serial-line and device diagnostics (8, 7, 11, 12).
    Diagnostics,
    /// Asks the device who it is (17, 43/14).
    Identification,
    /// Changes or reads the device's program or operating mode (90, 125, 126).
    Programming,
    /// File record access (20, 21).
    File,
    /// Anything else: CANopen tunnelling, user-defined and reserved codes.
    Other,
}

impl FunctionClass {
    /// The class's lowercase name, as in the policy language.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Diagnostics => "diagnostics",
            Self::Identification => "identification",
            Self::Programming => "programming",
            Self::File => "file",
            Self::Other => "other",
        }
    }
}

impl FunctionCode {
    /// 1: Read Coils.
    pub const READ_COILS: Self = Self(0x01);
    /// 2: Read Discrete Inputs.
    pub const READ_DISCRETE_INPUTS: Self = Self(0x02);
    /// 3: Read Holding Registers.
    pub const READ_HOLDING_REGISTERS: Self = Self(0x03);
    /// 4: Read Input Registers.
    pub const READ_INPUT_REGISTERS: Self = Self(0x04);
    /// 5: Write Single Coil.
    pub const WRITE_SINGLE_COIL: Self = Self(0x05);
    /// 6: Write Single Register.
    pub const WRITE_SINGLE_REGISTER: Self = Self(0x06);
    /// 7: Read Exception Status.
    pub const READ_EXCEPTION_STATUS: Self = Self(0x07);
    /// 8: Diagnostics.
    pub const DIAGNOSTICS: Self = Self(0x08);
    /// 11: Get Comm Event Counter.
    pub const GET_COMM_EVENT_COUNTER: Self = Self(0x0B);
    /// 12: Get Comm Event Log.
    pub const GET_COMM_EVENT_LOG: Self = Self(0x0C);
    /// 15: Write Multiple Coils.
    pub const WRITE_MULTIPLE_COILS: Self = Self(0x0F);
    /// 16: Write Multiple Registers.
    pub const WRITE_MULTIPLE_REGISTERS: Self = Self(0x10);
    /// 17: Report Server ID.
    pub const REPORT_SERVER_ID: Self = Self(0x11);
    /// 20: Read File Record.
    pub const READ_FILE_RECORD: Self = Self(0x14);
    /// 21: Write File Record.
    pub const WRITE_FILE_RECORD: Self = Self(0x15);
    /// 22: Mask Write Register.
    pub const MASK_WRITE_REGISTER: Self = Self(0x16);
    /// 23: Read/Write Multiple Registers.
    pub const READ_WRITE_MULTIPLE_REGISTERS: Self = Self(0x17);
    /// 24: Read FIFO Queue.
    pub const READ_FIFO_QUEUE: Self = Self(0x18);
    /// 43: Encapsulated Interface Transport (MEI).
    pub const ENCAPSULATED_INTERFACE: Self = Self(0x2B);
    /// 90: reserved; Schneider Electric UMAS.
    pub const UMAS: Self = Self(0x5A);
    /// 125: reserved; Modicon programming (download side).
    pub const MODICON_PROGRAM_125: Self = Self(0x7D);
    /// 126: reserved; Modicon programming.
    pub const MODICON_PROGRAM_126: Self = Self(0x7E);

    /// Recognises a function code byte, with the exception bit already cleared.
    pub fn new(code: u8) -> Result<Self, DecodeError> {
        if Self::kind_of(code).is_some() {
            Ok(Self(code))
        } else {
            Err(DecodeError::UnknownFunction(code))
        }
    }

    fn kind_of(code: u8) -> Option<FunctionKind> {
        match code {
            1..=8 | 11 | 12 | 15..=17 | 20..=24 | 43 => Some(FunctionKind::Public),
            65..=72 | 100..=110 => Some(FunctionKind::UserDefined),
            9 | 10 | 13 | 14 | 41 | 42 | 90 | 91 | 125..=127 => Some(FunctionKind::Reserved),
            _ => None,
        }
    }

    /// The code as carried on the wire (without the exception bit).
    pub fn code(self) -> u8 {
        self.0
    }

    /// Whether the code is public, user-defined or reserved.
    pub fn kind(self) -> FunctionKind {
        Self::kind_of(self.0).unwrap_or(FunctionKind::Reserved)
    }

    /// The access class the policy language uses for this code.
    pub fn class(self) -> FunctionClass {
        match self.0 {
            1..=4 | 24 => FunctionClass::Read,
            5 | 6 | 15 | 16 | 22 | 23 => FunctionClass::Write,
            7 | 8 | 11 | 12 => FunctionClass::Diagnostics,
            17 => FunctionClass::Identification,
            20 | 21 => FunctionClass::File,
            90 | 125 | 126 => FunctionClass::Programming,
            // 43 depends on its MEI type; the request decoder refines it.
            _ => FunctionClass::Other,
        }
    }

    /// A stable snake_case name, as used in logs, alerts and the policy language.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "read_coils",
            2 => "read_discrete_inputs",
            3 => "read_holding_registers",
            4 => "read_input_registers",
            5 => "write_single_coil",
            6 => "write_single_register",
            7 => "read_exception_status",
            8 => "diagnostics",
            11 => "get_comm_event_counter",
            12 => "get_comm_event_log",
            15 => "write_multiple_coils",
            16 => "write_multiple_registers",
            17 => "report_server_id",
            20 => "read_file_record",
            21 => "write_file_record",
            22 => "mask_write_register",
            23 => "read_write_multiple_registers",
            24 => "read_fifo_queue",
            43 => "encapsulated_interface_transport",
            90 => "schneider_umas",
            125 => "modicon_program_125",
            126 => "modicon_program_126",
            65..=72 | 100..=110 => "user_defined",
            _ => "reserved",
        }
    }

    /// Looks a code up by its [`FunctionCode::name`] (the policy language's spelling).
    pub fn from_name(name: &str) -> Option<Self> {
        if matches!(name, "user_defined" | "reserved") {
            return None;
        }
        (1..=127u8)
            .filter_map(|code| Self::new(code).ok())
            .find(|f| f.name() == name)
    }
}

impl fmt::Display for FunctionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl Serialize for FunctionCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.0)
    }
}
