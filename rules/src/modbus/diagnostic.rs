//! Diagnostics (function 8) sub-functions, by name.
//!
//! Several of them silence or restart a device (Force Listen Only Mode, Restart Communications
//! Option, Clear Counters), which is why detectors need them named exactly.

use serde::Serialize;
use std::fmt;

/// A Diagnostics sub-function code. Every 16-bit value is representable; codes the
/// specification reserves are named `reserved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiagnosticSubFunction(u16);

impl DiagnosticSubFunction {
    /// 0: Return Query Data (echo).
    pub const RETURN_QUERY_DATA: Self = Self(0);
    /// 1: Restart Communications Option.
    pub const RESTART_COMMUNICATIONS: Self = Self(1);
    /// 4: Force Listen Only Mode: the device stops answering.
    pub const FORCE_LISTEN_ONLY: Self = Self(4);
    /// 10: Clear Counters and Diagnostic Register.
    pub const CLEAR_COUNTERS: Self = Self(10);
    /// 20: Clear Overrun Counter and Flag.
    pub const CLEAR_OVERRUN_COUNTER: Self = Self(20);

    /// Wraps a sub-function code as carried on the wire.
    pub fn new(code: u16) -> Self {
        Self(code)
    }

    /// The code as carried on the wire.
    pub fn code(self) -> u16 {
        self.0
    }

    /// A stable snake_case name.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "return_query_data",
            1 => "restart_communications_option",
            2 => "return_diagnostic_register",
            3 => "change_ascii_input_delimiter",
            4 => "force_listen_only_mode",
            10 => "clear_counters_and_diagnostic_register",
            11 => "return_bus_message_count",
            12 => "return_bus_communication_error_count",
            13 => "return_bus_exception_error_count",
            14 => "return_server_message_count",
            15 => "return_server_no_response_count",
            16 => "return_server_nak_count",
            17 => "return_server_busy_count",
            18 => "return_bus_character_overrun_count",
            20 => "clear_overrun_counter_and_flag",
            _ => "reserved",
        }
    }

    /// Whether this sub-function changes device state (restart, silence, clear) rather than
    /// only reading a counter.
    pub fn changes_state(self) -> bool {
        matches!(self.0, 1 | 3 | 4 | 10 | 20)
    }
}

impl fmt::Display for DiagnosticSubFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl Serialize for DiagnosticSubFunction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.0)
    }
}
