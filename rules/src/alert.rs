//! The alert schema (versioned JSON), severities, and the catalogue of built-in rules with their
//! stable ids, default severities and MITRE ATT&CK for ICS techniques.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

pub mod seen;

pub use seen::Seen;

/// Version of the alert JSON schema this build writes; bumped on any change of fields or of the
/// id derivation. 3: rules that fold per (rule, master, target) ([`FoldKey::Target`]) carry
/// [`Alert::seen`] (the unit ids, functions and address ranges of their occurrences), and their
/// id leaves the unit out. 2: the id derives from `first_ts` as the alert carries it
/// (microseconds), so the collector can check every id against the alert's own fields. 1: the
/// id derived from the capture's nanoseconds, which the alert does not carry.
pub const SCHEMA_VERSION: u32 = 3;

/// How urgent an alert is, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth recording, not worth a look.
    Info,
    /// Reconnaissance and oddities.
    Low,
    /// Likely misuse or a degraded device.
    Medium,
    /// Unauthorised commands and attacks on availability.
    High,
    /// Changes to what the plant runs: program downloads, stop commands.
    Critical,
}

impl Severity {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// Every severity, least severe first.
    pub const ALL: [Severity; 5] = [
        Self::Info,
        Self::Low,
        Self::Medium,
        Self::High,
        Self::Critical,
    ];

    /// Parses a lowercase name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One alert, as written to JSON lines and sent to the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub schema: u32,
    /// Unique and stable: derived from the agent, rule, endpoints and first occurrence, so a
    /// retried delivery (or a replay of the same capture) carries the same id.
    pub id: String,
    /// Capture time of the (last) occurrence.
    pub ts: Timestamp,
    /// The agent that raised it.
    pub agent: String,
    /// How urgent.
    pub severity: Severity,
    /// The rule's stable id (`diag.force_listen_only`, `policy.unauthorized_write`, ...).
    pub rule: String,
    /// A one-line description.
    pub title: String,
    /// MITRE ATT&CK for ICS technique ids.
    pub technique: Vec<String>,
    /// The actor's address.
    pub src_ip: IpAddr,
    /// The actor's port.
    pub src_port: u16,
    /// The target's address.
    pub dst_ip: IpAddr,
    /// The target's port.
    pub dst_port: u16,
    /// The unit addressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_id: Option<u8>,
    /// The function code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_code: Option<u8>,
    /// The function's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// First address read or written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<u16>,
    /// Number of items read or written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u16>,
    /// Values written (or read, for process-value alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u16>>,
    /// The exception's name, for exception-based alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// Occurrences folded into this alert.
    pub count: u64,
    /// Capture time of the first folded occurrence.
    pub first_ts: Timestamp,
    /// The offending frame in hex, trimmed to 64 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// The flow's id within the agent's run.
    pub flow: u64,
    /// Why, in words: what the policy or detector found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a rule folded per (rule, master, target), what its occurrences used: unit ids,
    /// functions, address ranges (schema 3). `unit_id`, `function_code` and `address` are then
    /// those of the occurrence that raised it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<Seen>,
}

impl Alert {
    /// The id this alert's own identifying fields derive with `seq` ([`Alert::stable_id`]): what
    /// an agent gives it, and what the collector checks it against.
    pub fn derived_id(&self, seq: u64) -> String {
        // An alert that covers several units (schema 3, `seen`) is not any one unit's.
        let unit = match (&self.seen, self.schema >= 3) {
            (Some(_), true) => None,
            _ => self.unit_id,
        };
        Self::stable_id(
            &self.agent,
            &self.rule,
            self.src_ip,
            self.dst_ip,
            unit,
            self.first_ts,
            seq,
        )
    }

    /// A stable id for an alert from its identifying fields and `seq` (0 for the alert a fold
    /// window raises at once, 1 for the totals it reports when it closes). `first` counts to
    /// the microsecond, the precision an alert carries, so the id can be derived again from the
    /// alert itself (schema 2; schema 1 hashed nanoseconds, the same for captures in
    /// microseconds).
    pub fn stable_id(
        agent: &str,
        rule: &str,
        src: IpAddr,
        dst: IpAddr,
        unit: Option<u8>,
        first: Timestamp,
        seq: u64,
    ) -> String {
        let mut hasher = blake3::Hasher::new();
        for part in [agent, rule, &src.to_string(), &dst.to_string()] {
            hasher.update(part.as_bytes());
            hasher.update(&[0]);
        }
        hasher.update(&unit.map_or(256u16, u16::from).to_le_bytes());
        let micros = first.as_nanos() / 1_000 * 1_000;
        hasher.update(&micros.to_le_bytes());
        hasher.update(&seq.to_le_bytes());
        let hash = hasher.finalize();
        hash.to_hex().get(..32).unwrap_or_default().to_string()
    }
}

/// What a built-in rule is: id, title, default severity, techniques, and when its repeats
/// raise an alert. The whole definition of a rule is its line in the catalogue below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMeta {
    /// Stable id.
    pub id: &'static str,
    /// One-line title.
    pub title: &'static str,
    /// Default severity.
    pub severity: Severity,
    /// ATT&CK for ICS technique ids.
    pub technique: &'static [&'static str],
    /// When occurrences within a fold window raise an alert.
    pub fold: Fold,
    /// What one fold window covers.
    pub key: FoldKey,
}

/// What one of a rule's fold windows covers: which occurrences are one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldKey {
    /// One (rule, source, destination, unit): the unit is part of what happened (a stop
    /// command to unit 3 is not one to unit 4).
    Unit,
    /// One (rule, master, target): the unit, function and addresses are detail, gathered in
    /// the alert's [`Alert::seen`] (a master unknown to the policy scanning 247 unit ids is
    /// one event).
    Target,
}

/// When a rule's occurrences within a fold window raise an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// At the given occurrence (1: the first); a policy's `threshold` for the rule overrides
    /// it.
    After(u32),
    /// The detector counts distinct things itself (unit ids, address blocks, writes, pending
    /// requests), so each finding is over its threshold already; a policy's `threshold` for
    /// the rule tunes the detector's count instead.
    Counted,
}

/// A catalogue line's fold: the one given, else the first occurrence.
macro_rules! fold_of {
    () => {
        Fold::After(1)
    };
    ($fold:expr) => {
        $fold
    };
}

/// A catalogue line's fold key: `=> Target` when given, else per unit.
macro_rules! key_of {
    () => {
        FoldKey::Unit
    };
    ($key:ident) => {
        FoldKey::$key
    };
}

macro_rules! rules {
    ($($name:ident = $id:literal, $title:literal, $sev:ident, [$($t:literal),*] $(, $fold:expr)? $(=> $key:ident)?;)*) => {
        /// Every built-in rule, by constant.
        pub mod rule {
            use super::{Fold, FoldKey, RuleMeta, Severity};
            $(
                #[doc = $title]
                pub const $name: RuleMeta = RuleMeta {
                    id: $id,
                    title: $title,
                    severity: Severity::$sev,
                    technique: &[$($t),*],
                    fold: fold_of!($($fold)?),
                    key: key_of!($($key)?),
                };
            )*
            /// The whole catalogue, in documentation order.
            pub const ALL: &[RuleMeta] = &[$($name),*];
        }
    };
}

rules! {
    FORCE_LISTEN_ONLY = "diag.force_listen_only", "Force Listen Only Mode (function 8/4) silences the device", High, ["T0814", "T0816"];
    RESTART_COMMUNICATIONS = "diag.restart_communications", "Restart Communications Option (function 8/1) restarts the device's communications", High, ["T0816"];
    CLEAR_COUNTERS = "diag.clear_counters", "Clear Counters and Diagnostic Register (function 8/10)", Medium, ["T0872"];
    READ_DEVICE_ID = "recon.read_device_id", "Read Device Identification (function 43/14)", Low, ["T0888"];
    REPORT_SERVER_ID = "recon.report_server_id", "Report Server ID (function 17)", Low, ["T0888"];
    POINTS_SCAN = "recon.points_scan", "Points-list scan: a burst of illegal-data-address exceptions", Medium, ["T0861", "T0846"], Fold::After(3) => Target;
    FUNCTION_CODE_SCAN = "recon.function_code_scan", "Function-code scan: a burst of illegal-function exceptions", Medium, ["T0888", "T0846"], Fold::After(3) => Target;
    UNIT_ID_SCAN = "recon.unit_id_scan", "Unit-id scan: one master addressing many unit ids", Medium, ["T0846"], Fold::Counted => Target;
    ADDRESS_SWEEP = "recon.address_sweep", "Address sweep: reads walking through many address blocks", Medium, ["T0861"], Fold::Counted => Target;
    ILLEGAL_ADU_SIZE = "proto.illegal_adu_size", "Illegal ADU size (MBAP length outside 2-254)", Medium, ["T0814"];
    LENGTH_MISMATCH = "proto.length_mismatch", "Frame length disagrees with its contents (trailing or missing bytes)", Medium, ["T0814"];
    INVALID_PROTOCOL_ID = "proto.invalid_protocol_id", "MBAP protocol id is not 0", Medium, ["T0814"];
    MALFORMED = "proto.malformed", "Malformed Modbus frame", Low, ["T0814"];
    NON_MODBUS = "proto.non_modbus", "Non-Modbus traffic on a Modbus port", Medium, ["T0885"];
    OVERLAP_CONFLICT = "proto.overlap_conflict", "TCP segments overlap with different contents (IDS evasion)", High, ["T0820"];
    BUSY_STORM = "dos.busy_exception_storm", "Server-device-busy exception storm", Medium, ["T0814"], Fold::After(3);
    ACKNOWLEDGE_STORM = "dos.acknowledge_exception_storm", "Acknowledge exception storm", Medium, ["T0814"], Fold::After(3);
    REQUEST_FLOOD = "dos.request_flood", "Request flood: requests piling up unanswered", High, ["T0814"], Fold::Counted;
    SYN_FLOOD = "dos.syn_flood", "SYN flood: connection attempts to one server that mostly never complete", High, ["T0814", "T0826"], Fold::Counted;
    CONNECTION_FLOOD = "dos.connection_flood", "Connection flood: far more connections to one server than it takes normally", High, ["T0814", "T0826"], Fold::Counted;
    DISTRIBUTED_FLOOD = "dos.distributed_flood", "Distributed request flood: many masters driving one server far above its normal rate", High, ["T0814"], Fold::Counted;
    BRUTE_FORCE_IO = "impact.brute_force_io", "Brute-force I/O: points written over and over", High, ["T0806"], Fold::Counted;
    BROADCAST_WRITE = "impact.broadcast_write", "Write broadcast to unit 0", High, ["T0855", "T0836"];
    UMAS_PROGRAM_DOWNLOAD = "program.umas_download", "Schneider UMAS program download to the PLC", Critical, ["T0843"];
    UMAS_PROGRAM_UPLOAD = "program.umas_upload", "Schneider UMAS program upload from the PLC", High, ["T0845"];
    UMAS_START = "program.umas_start", "Schneider UMAS start PLC", Critical, ["T0858"];
    UMAS_STOP = "program.umas_stop", "Schneider UMAS stop PLC", Critical, ["T0858", "T0881"];
    MODICON_PROGRAMMING = "program.modicon", "Modicon programming function (125/126)", High, ["T0843", "T0857"];
    FILE_READ = "file.read_record", "Read File Record (function 20)", Low, ["T0882"];
    FILE_WRITE = "file.write_record", "Write File Record (function 21)", High, ["T0857", "T0839"];
    UNSOLICITED_RESPONSE = "spoof.unsolicited_response", "Response that answers no request", Medium, ["T0856"];
    RESPONSE_MISMATCH = "spoof.response_mismatch", "Response that does not match its request", Medium, ["T0856"];
    ARP_SPOOF = "spoof.arp", "ARP spoofing: two Ethernet addresses claim one IP address", High, ["T0830"], Fold::Counted;
    MAC_CHANGE = "spoof.mac_change", "An IP address moved to an Ethernet address the policy does not declare", Low, ["T0830"], Fold::Counted;
    DEVICE_UNRESPONSIVE = "availability.device_unresponsive", "A device that had been answering stopped answering a master that kept trying", High, ["T0814", "T0826"];
    DEVICE_RECOVERED = "availability.device_recovered", "A device that had stopped answering answers again", Info, ["T0814", "T0826"];
    NEW_PAIR = "baseline.new_pair", "New master/slave pair after the baseline period", Low, ["T0848"];
    UNKNOWN_MASTER = "policy.unknown_master", "A master the policy does not know", High, ["T0848", "T0855"] => Target;
    UNAUTHORIZED_READ = "policy.unauthorized_read", "Read not allowed by the policy", Medium, ["T0801", "T0861"] => Target;
    UNAUTHORIZED_WRITE = "policy.unauthorized_write", "Write not allowed by the policy", High, ["T0855", "T0836"] => Target;
    UNAUTHORIZED_FUNCTION = "policy.unauthorized_function", "Function not allowed by the policy", High, ["T0855"] => Target;
    WRITE_OUTSIDE_RANGES = "policy.write_outside_ranges", "Write to an address range the policy does not cover", High, ["T0836", "T0855"] => Target;
    SETPOINT_OUT_OF_BOUNDS = "policy.setpoint_out_of_bounds", "Value written outside the policy's bounds", High, ["T0836"];
    PROCESS_VALUE_OUT_OF_BOUNDS = "policy.process_value_out_of_bounds", "Value read back outside the policy's process limits", Medium, ["T0831"];
    RATE_EXCEEDED = "policy.rate_exceeded", "Requests faster than the policy's rate limit", Medium, ["T0814", "T0806"];
    OUTSIDE_HOURS = "policy.outside_hours", "Command outside the policy's time window", Medium, ["T0855"];
    POLICY_RELOAD_FAILED = "agent.policy_reload_failed", "A new policy was rejected; the previous one stays in force", Medium, [];
    OUTBOX_OVERFLOW = "agent.outbox_overflow", "The agent's outbox was full: its oldest undelivered records were dropped", High, [];
}

/// Looks a built-in rule up by id.
pub fn rule_by_id(id: &str) -> Option<&'static RuleMeta> {
    rule::ALL.iter().find(|r| r.id == id)
}

#[cfg(test)]
mod tests;

/// A valid schema-3 alert for tests: agent `a1`, 10.0.0.5 writing 7 to holding register 100
/// of unit 1 at 10.0.0.9 (the frame included), `policy.unauthorized_write`, id derived.
#[cfg(test)]
pub(crate) fn sample() -> Alert {
    let first = Timestamp::from_secs(1_700_000_000);
    let mut a = Alert {
        schema: SCHEMA_VERSION,
        id: String::new(),
        ts: first,
        agent: "a1".into(),
        severity: Severity::High,
        rule: rule::UNAUTHORIZED_WRITE.id.into(),
        title: rule::UNAUTHORIZED_WRITE.title.into(),
        technique: vec!["T0855".into(), "T0836".into()],
        src_ip: IpAddr::from([10, 0, 0, 5]),
        src_port: 40_000,
        dst_ip: IpAddr::from([10, 0, 0, 9]),
        dst_port: 502,
        unit_id: Some(1),
        function_code: Some(6),
        function: Some("write_single_register".into()),
        address: Some(100),
        quantity: Some(1),
        values: Some(vec![7]),
        exception: None,
        count: 1,
        first_ts: first,
        evidence: Some("000100000006010600640007".into()),
        flow: 1,
        message: None,
        seen: None,
    };
    a.id = a.derived_id(0);
    a
}
