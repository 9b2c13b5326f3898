//! Schneider Electric UMAS, carried in Modbus function 90.
//!
//! A UMAS request is `[session key][UMAS function][data]`; a response is
//! `[session key][status: 0xFE ok | 0xFD error][data]`. The function byte tells program transfers
//! and start/stop commands apart, which is what detectors care about.
//!
//! Schneider's words are from the engineering station's side and inverted from ATT&CK's: a UMAS
//! "upload" (0x30-0x32) sends a program *to* the PLC (T0843 Program Download), a UMAS "download"
//! (0x33-0x35) reads it *from* the PLC (T0845 Program Upload). The helpers below say which.

use serde::Serialize;
use std::fmt;

/// A UMAS function byte. Every value is representable; unknown ones are named `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UmasFunction(u8);

impl UmasFunction {
    /// 0x02: read the PLC's identity.
    pub const READ_ID: Self = Self(0x02);
    /// 0x10: take the PLC reservation (exclusive engineering session).
    pub const TAKE_RESERVATION: Self = Self(0x10);
    /// 0x30: begin sending a program to the PLC.
    pub const INITIALIZE_UPLOAD: Self = Self(0x30);
    /// 0x33: begin reading the program from the PLC.
    pub const INITIALIZE_DOWNLOAD: Self = Self(0x33);
    /// 0x40: start the PLC.
    pub const START_PLC: Self = Self(0x40);
    /// 0x41: stop the PLC.
    pub const STOP_PLC: Self = Self(0x41);

    /// Wraps a UMAS function byte.
    pub fn new(code: u8) -> Self {
        Self(code)
    }

    /// The byte as carried on the wire.
    pub fn code(self) -> u8 {
        self.0
    }

    /// A stable snake_case name.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x01 => "init_comm",
            0x02 => "read_id",
            0x03 => "read_project_info",
            0x04 => "read_plc_info",
            0x06 => "read_card_info",
            0x0A => "repeat",
            0x10 => "take_plc_reservation",
            0x11 => "release_plc_reservation",
            0x12 => "keep_alive",
            0x20 => "read_memory_block",
            0x22 => "read_variables",
            0x23 => "write_variables",
            0x24 => "read_coils_registers",
            0x25 => "write_coils_registers",
            0x30 => "initialize_upload",
            0x31 => "upload_block",
            0x32 => "end_upload",
            0x33 => "initialize_download",
            0x34 => "download_block",
            0x35 => "end_download",
            0x39 => "read_ethernet_master_data",
            0x40 => "start_plc",
            0x41 => "stop_plc",
            0x50 => "monitor_plc",
            0x58 => "check_plc",
            0x70 => "read_io_object",
            0x71 => "write_io_object",
            0x73 => "get_status_module",
            _ => "unknown",
        }
    }

    /// A program is being written into the PLC (UMAS upload; ATT&CK T0843 Program Download).
    pub fn writes_program(self) -> bool {
        matches!(self.0, 0x30..=0x32)
    }

    /// A program is being read out of the PLC (UMAS download; ATT&CK T0845 Program Upload).
    pub fn reads_program(self) -> bool {
        matches!(self.0, 0x33..=0x35)
    }

    /// The PLC's operating mode changes (start or stop; ATT&CK T0858).
    pub fn changes_mode(self) -> bool {
        matches!(self.0, 0x40 | 0x41)
    }

    /// Identification and information reads (ATT&CK T0888).
    pub fn identifies(self) -> bool {
        matches!(self.0, 0x02..=0x06)
    }
}

impl fmt::Display for UmasFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#04x})", self.name(), self.0)
    }
}

impl Serialize for UmasFunction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}
