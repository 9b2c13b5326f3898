//! Forwarding alerts to what SIEMs ingest today: syslog (RFC 5424) carrying a CEF payload, over
//! UDP or TCP, and a JSON-lines file.
//!
//! An exporter reads stored alerts in ingest order from a cursor kept in the store ([`relay`]),
//! so it sends each alert once in normal operation and, across a crash or a move to another
//! replica, at least once, never skipping one; one replica at a time exports (a lease in the
//! store). Every record carries the alert id, so a SIEM can drop a repeat. UDP syslog cannot
//! promise delivery: a datagram the system refused is counted lost.

mod relay;
mod sink;

pub use relay::{Exporting, relay};

/// How long an exporter's lease runs unless renewed: how long exports wait when the replica
/// exporting dies before another takes over.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(15);
pub use sink::{Outcome, Sink};

use otwatch_rules::alert::{Alert, Severity};

/// CEF severity (0-10) of an alert severity.
fn cef_severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// Syslog severity (RFC 5424) of an alert severity.
fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// Escapes a CEF header field as the CEF specification asks (`\\` and `|` with a backslash); a
/// header cannot hold a line break, so any control character becomes a space. Whatever bytes an
/// alert carries, the message stays one line with its fields where they belong.
fn header(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a CEF extension value as the CEF specification asks (`\\` and `=` with a backslash,
/// CR and LF as `\\r` and `\\n`); any other control character becomes a space.
fn value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// An RFC 5424 header field (HOSTNAME, MSGID): printable US-ASCII without spaces (33-126), at
/// most `max` characters, `-` (the nil value) when nothing is left.
fn header_field(text: &str, max: usize) -> String {
    let out: String = text
        .chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .take(max)
        .collect();
    if out.is_empty() { "-".into() } else { out }
}

/// What ends a message cut to the receiver's size.
pub const TRUNCATED: &str = " [truncated]";

/// Cuts `line` to at most `max` bytes, ending it with [`TRUNCATED`]: at a character boundary,
/// and never inside an escape (a cut after a lone backslash would escape the marker).
fn fit(mut line: String, max: usize) -> String {
    if line.len() <= max {
        return line;
    }
    let mut cut = max.saturating_sub(TRUNCATED.len());
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    line.truncate(cut);
    let backslashes = line.bytes().rev().take_while(|b| *b == b'\\').count();
    if backslashes % 2 == 1 {
        line.pop();
    }
    line.push_str(TRUNCATED);
    line
}

/// The CEF line for an alert.
pub fn cef(alert: &Alert) -> String {
    let mut ext = format!(
        "rt={} src={} spt={} dst={} dpt={} cnt={} externalId={} deviceExternalId={} cs1Label=technique cs1={}",
        alert.ts.as_nanos() / 1_000_000,
        alert.src_ip,
        alert.src_port,
        alert.dst_ip,
        alert.dst_port,
        alert.count,
        alert.id,
        value(&alert.agent),
        value(&alert.technique.join(",")),
    );
    if let Some(f) = &alert.function {
        ext += &format!(" cs2Label=function cs2={}", value(f));
    }
    if let Some(u) = alert.unit_id {
        ext += &format!(" cn1Label=unit cn1={u}");
    }
    if let Some(seen) = &alert.seen {
        ext += &format!(" cs3Label=seen cs3={}", value(&seen.to_string()));
    }
    if let Some(m) = &alert.message {
        ext += &format!(" msg={}", value(m));
    }
    format!(
        "CEF:0|otwatch|otwatch|{}|{}|{}|{}|{ext}",
        env!("CARGO_PKG_VERSION"),
        header(&alert.rule),
        header(&alert.title),
        cef_severity(alert.severity),
    )
}

/// The RFC 5424 syslog message for an alert (facility local4), at most `max` bytes (cut with
/// [`TRUNCATED`]). HOSTNAME and MSGID (the rule id) keep to what RFC 5424 allows them.
pub fn syslog_line(alert: &Alert, hostname: &str, max: usize) -> String {
    let pri = 20 * 8 + u16::from(syslog_severity(alert.severity));
    let line = format!(
        "<{pri}>1 {} {} otwatch - {} - {}",
        alert.ts,
        header_field(hostname, 255),
        header_field(&alert.rule, 32),
        cef(alert)
    );
    fit(line, max)
}

#[cfg(test)]
mod tests;
