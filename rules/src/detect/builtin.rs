//! The built-in detectors: what Digital Bond's Quickdraw rules detect, and more. Each turns flow
//! events into findings of one rule from [`crate::alert::rule`]; thresholds over time live here
//! when they count distinct things (unit ids, address blocks, points) and in the fold otherwise.

use std::time::Duration;

use rustc_hash::FxHashMap;

use super::pairs::{PairRef, slot};
use super::window::Counter;
use super::{Counted, DetectionConfig, Facts, evidence};
use crate::alert::{Fold, RuleMeta, rule};
use crate::flow::{FlowEvent, FlowInfo};
use crate::modbus::{
    DecodeError, DiagnosticSubFunction, ExceptionCode, FunctionClass, FunctionCode, Request,
    Response,
};
use crate::policy::Policy;
use crate::session::Event;
use crate::time::Timestamp;
use crate::transaction::Outcome;

/// Most entries any per-pair detector map holds before it is cleared.
const MAX_ENTRIES: usize = 100_000;

/// Occurrences within the window before the fold raises an alert: the catalogue's, unless the
/// policy tunes it (`tuned`).
pub(super) fn fold_threshold(meta: &RuleMeta, tuned: Option<u32>) -> u32 {
    match meta.fold {
        Fold::After(n) => tuned.unwrap_or(n),
        // The detector counted distinct things itself: already over threshold.
        Fold::Counted => 1,
    }
}

/// Thresholds and windows of the detectors that count, resolved once per policy so the
/// per-request path does no lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Outstanding requests that make a flood.
    flood: u32,
    /// Distinct unit ids that make a unit-id scan, and the window.
    unit_scan: (u32, Duration),
    /// Distinct read blocks that make an address sweep, and the window.
    sweep: (u32, Duration),
    /// Changes of one point that make brute-force I/O, and the window.
    brute: (u32, Duration),
    /// Whether new pairs are reported (only without a policy: with one, unknown masters are).
    new_pairs: bool,
}

impl Limits {
    /// Defaults, overridden by the policy's `[detectors."rule.id"]` tuning.
    pub fn resolve(policy: Option<&Policy>, config: &DetectionConfig) -> Self {
        let tuned = |meta: &RuleMeta, default: u32| {
            let t = policy.and_then(|p| p.tuning(meta.id));
            (
                t.and_then(|t| t.threshold).unwrap_or(default),
                t.and_then(|t| t.window).unwrap_or(config.default_window),
            )
        };
        Self {
            flood: tuned(&rule::REQUEST_FLOOD, 100).0,
            unit_scan: tuned(&rule::UNIT_ID_SCAN, 10),
            sweep: tuned(&rule::ADDRESS_SWEEP, 20),
            brute: tuned(&rule::BRUTE_FORCE_IO, 60),
            new_pairs: policy.is_none(),
        }
    }
}

/// One point written by a master: pair, unit, table, address.
type Point = (u32, u8, u8, u16);

/// Changes counted for a point, and the value last written to it.
type PointState = (Counter, Option<u16>);

/// State of the detectors that look across transactions.
#[derive(Debug)]
pub(super) struct Builtins {
    limits: Limits,
    first_ts: Option<Timestamp>,
    writes: FxHashMap<Point, PointState>,
}

impl Builtins {
    /// Detectors with these thresholds and no history.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            first_ts: None,
            writes: FxHashMap::default(),
        }
    }

    /// The clock stepped back from `before` to `now`: the write counters restart, and the
    /// baseline keeps the time it has already run.
    pub fn clock_stepped(&mut self, before: Timestamp, now: Timestamp) {
        if let Some(first) = self.first_ts.as_mut() {
            *first = first.saturating_sub(before.since(now));
        }
        for (counter, _) in self.writes.values_mut() {
            *counter = Counter::default();
        }
    }

    /// Sets the thresholds for a (new) policy.
    pub fn configure(&mut self, limits: Limits) {
        self.limits = limits;
    }

    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        ts: Timestamp,
        flow: &FlowInfo,
        event: &FlowEvent<'_>,
        pair: Option<&mut PairRef<'_>>,
        config: &DetectionConfig,
        out: &mut impl FnMut(&'static RuleMeta, Facts),
    ) {
        let first = *self.first_ts.get_or_insert(ts);
        match event {
            FlowEvent::Session(e) => self.session(ts, first, flow, e, pair, config, out),
            FlowEvent::OverlapConflict { direction, bytes } => out(
                &rule::OVERLAP_CONFLICT,
                Facts {
                    from_server: *direction == crate::Direction::ToClient,
                    message: Some(format!("{bytes} bytes resent with different contents")),
                    ..Facts::default()
                },
            ),
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn session(
        &mut self,
        ts: Timestamp,
        first: Timestamp,
        flow: &FlowInfo,
        event: &Event<'_>,
        pair: Option<&mut PairRef<'_>>,
        config: &DetectionConfig,
        out: &mut impl FnMut(&'static RuleMeta, Facts),
    ) {
        match event {
            Event::Request {
                unit_id,
                request,
                raw,
                outstanding,
                ..
            } => {
                let facts = || Facts::of_request(*unit_id, request, raw);
                if let Some(meta) = command_rule(request) {
                    out(meta, facts());
                }
                if *unit_id == 0 && request.class() == FunctionClass::Write {
                    out(&rule::BROADCAST_WRITE, facts());
                }
                if *outstanding >= self.limits.flood as usize {
                    let mut f = facts();
                    f.message = Some(format!("{outstanding} requests waiting for a response"));
                    out(&rule::REQUEST_FLOOD, f);
                }
                if let Some(pair) = pair {
                    self.per_pair(ts, first, *unit_id, request, raw, pair, config, out);
                }
            }
            Event::Transaction(t) => {
                if let Some(Response::Exception { function, code }) = t.response {
                    let meta = match code {
                        ExceptionCode::SERVER_DEVICE_BUSY => Some((&rule::BUSY_STORM, true)),
                        ExceptionCode::ACKNOWLEDGE => Some((&rule::ACKNOWLEDGE_STORM, true)),
                        ExceptionCode::ILLEGAL_DATA_ADDRESS => Some((&rule::POINTS_SCAN, false)),
                        ExceptionCode::ILLEGAL_FUNCTION => Some((&rule::FUNCTION_CODE_SCAN, false)),
                        _ => None,
                    };
                    if let Some((meta, from_server)) = meta {
                        let mut facts = match &t.request {
                            Some(r) => Facts::of_request(t.unit_id, r, &[]),
                            None => Facts {
                                unit_id: Some(t.unit_id),
                                function: Some(function),
                                ..Facts::default()
                            },
                        };
                        facts.from_server = from_server;
                        facts.exception = Some(code);
                        out(meta, facts);
                    }
                }
                if t.outcome == Outcome::Unsolicited && unexplained(ts, flow) {
                    out(
                        &rule::UNSOLICITED_RESPONSE,
                        Facts {
                            from_server: true,
                            unit_id: Some(t.unit_id),
                            function: t.response.map(|r| r.function()),
                            exception: t.response.and_then(|r| r.exception()),
                            message: t
                                .transaction_id
                                .map(|id| format!("transaction id {id} matches no request")),
                            ..Facts::default()
                        },
                    );
                }
            }
            Event::ResponseMismatch { error, unit_id, .. } => out(
                &rule::RESPONSE_MISMATCH,
                Facts {
                    from_server: true,
                    unit_id: Some(*unit_id),
                    message: Some(error.to_string()),
                    ..Facts::default()
                },
            ),
            Event::DecodeError {
                direction,
                error,
                unit_id,
                raw,
                ..
            } => {
                let meta = match error {
                    DecodeError::LengthTooLarge(_) | DecodeError::LengthTooSmall(_) => {
                        &rule::ILLEGAL_ADU_SIZE
                    }
                    DecodeError::LengthMismatch { .. } | DecodeError::TrailingBytes(_) => {
                        &rule::LENGTH_MISMATCH
                    }
                    DecodeError::InvalidProtocolId(_) => &rule::INVALID_PROTOCOL_ID,
                    _ => &rule::MALFORMED,
                };
                out(
                    meta,
                    Facts {
                        from_server: *direction == crate::Direction::ToClient,
                        unit_id: *unit_id,
                        function: raw
                            .get(7)
                            .and_then(|fc| FunctionCode::new(fc & 0x7f).ok())
                            .filter(|_| unit_id.is_some()),
                        evidence: evidence(raw),
                        message: Some(error.to_string()),
                        ..Facts::default()
                    },
                );
            }
            Event::NotModbus { direction, sample } => out(
                &rule::NON_MODBUS,
                Facts {
                    from_server: *direction == crate::Direction::ToClient,
                    evidence: evidence(sample),
                    ..Facts::default()
                },
            ),
            Event::Recognised { .. } | Event::Skipped { .. } => {}
        }
    }

    /// Detectors that count across a master/target pair. A read whose unit and block the
    /// pair's windows hold (as its memo says) changes none of them and is skipped.
    #[allow(clippy::too_many_arguments)]
    fn per_pair(
        &mut self,
        ts: Timestamp,
        first: Timestamp,
        unit: u8,
        request: &Request<'_>,
        raw: &[u8],
        pair: &mut PairRef<'_>,
        config: &DetectionConfig,
        out: &mut impl FnMut(&'static RuleMeta, Facts),
    ) {
        if ts < pair.recall.windows_until {
            return;
        }
        let Self { limits, writes, .. } = self;
        let PairRef {
            id: pair_id,
            new: new_pair,
            state: pair,
            recall,
            ..
        } = pair;
        let (pair_id, new_pair) = (*pair_id, *new_pair);
        if writes.len() > MAX_ENTRIES {
            writes.clear();
        }
        if limits.new_pairs && new_pair && ts.since(first) >= config.baseline {
            out(
                &rule::NEW_PAIR,
                Facts {
                    unit_id: Some(unit),
                    function: Some(request.function()),
                    message: Some("first request between these hosts".into()),
                    ..Facts::default()
                },
            );
        }
        let (unit_threshold, unit_window) = limits.unit_scan;
        if pair
            .units
            .add(ts, unit_window, u32::from(unit), unit_threshold)
        {
            let units = pair
                .units
                .items()
                .iter()
                .filter_map(|u| u8::try_from(*u).ok())
                .collect();
            out(
                &rule::UNIT_ID_SCAN,
                Facts {
                    message: Some(format!(
                        "{unit_threshold} unit ids addressed within {unit_window:?}"
                    )),
                    counted: Counted {
                        units,
                        ranges: Vec::new(),
                    },
                    ..Facts::of_request(unit, request, raw)
                },
            );
        }
        if let Some((table, address, quantity)) = request.read_range() {
            let (threshold, window) = limits.sweep;
            let block = u32::from(address) << 16 | u32::from(quantity);
            let mut held = None;
            let mut blocks_read = Vec::new();
            let swept = pair
                .tables(unit)
                .get_mut(usize::from(table as u8))
                .is_some_and(|blocks| {
                    let swept = blocks.add(ts, window, block, threshold);
                    held = blocks.holds_until(block, window);
                    if swept {
                        // Each block is an address and a quantity.
                        blocks_read = blocks
                            .items()
                            .iter()
                            .map(|b| ((b >> 16) as u16, (b & 0xffff) as u16))
                            .collect();
                    }
                    swept
                });
            // Until both windows end, the same read changes neither.
            recall.windows_until = held
                .zip(pair.units.holds_until(u32::from(unit), unit_window))
                .map_or_else(Timestamp::default, |(b, u)| b.min(u));
            if swept {
                out(
                    &rule::ADDRESS_SWEEP,
                    Facts {
                        message: Some(format!(
                            "{threshold} different {} blocks read within {window:?}",
                            table.name()
                        )),
                        counted: Counted {
                            units: Vec::new(),
                            ranges: blocks_read,
                        },
                        ..Facts::of_request(unit, request, raw)
                    },
                );
            }
        }
        if let Some((table, address, quantity)) = request.write_range() {
            let meta = &rule::BRUTE_FORCE_IO;
            let (changes, window) = limits.brute;
            // Masters rewrite outputs every cycle with the same values; forcing a point means
            // changing it over and over. Only changes count.
            let mut forced = None;
            for (i, value) in written(request).into_iter().enumerate() {
                let a = address.saturating_add(u16::try_from(i).unwrap_or(u16::MAX));
                let point = writes.entry((pair_id, unit, table as u8, a)).or_default();
                let changed = point.1.is_some_and(|last| last != value);
                point.1 = Some(value);
                if changed && point.0.add(ts, window, changes) {
                    forced.get_or_insert(a);
                }
            }
            if let Some(a) = forced {
                out(
                    meta,
                    Facts {
                        message: Some(format!(
                            "{} {a} changed {changes} times within {window:?}",
                            table.name()
                        )),
                        ..Facts::of_request(unit, request, raw)
                    },
                );
            }
            let many = changes.saturating_mul(4);
            let points = slot(&mut pair.points, unit);
            let mut spread = false;
            for a in address..address.saturating_add(quantity.min(256)) {
                spread |= points.add(
                    ts,
                    window,
                    u32::from(table as u8) << 16 | u32::from(a),
                    many,
                );
            }
            if spread {
                out(
                    meta,
                    Facts {
                        message: Some(format!("{many} different points written within {window:?}")),
                        ..Facts::of_request(unit, request, raw)
                    },
                );
            }
        }
    }
}

/// How long after a capture loss, or after a flow was picked up mid-stream, a response without
/// a request is blamed on the capture rather than on the sender.
const CAPTURE_GRACE: Duration = Duration::from_secs(10);

/// Whether an unsolicited response cannot be explained by the capture: the flow was not picked
/// up mid-exchange moments ago (its handshake was seen, or it is older than the grace period)
/// and no bytes were lost recently (the request may have been among them).
fn unexplained(ts: Timestamp, flow: &FlowInfo) -> bool {
    let fresh_pickup = !flow.handshake_seen && ts.since(flow.first_seen) < CAPTURE_GRACE;
    let recent_loss = flow.last_gap.is_some_and(|g| ts.since(g) < CAPTURE_GRACE);
    !fresh_pickup && !recent_loss
}

/// The values a request writes, in address order (coils as 0/1); at most 256.
fn written(request: &Request<'_>) -> Vec<u16> {
    let values: Vec<u16> = match *request {
        Request::WriteSingleCoil { value, .. } => vec![u16::from(value)],
        Request::WriteSingleRegister { value, .. } => vec![value],
        Request::WriteMultipleRegisters { values, .. }
        | Request::ReadWriteMultipleRegisters { values, .. } => values.iter().take(256).collect(),
        Request::WriteMultipleCoils { values, .. } => {
            values.iter().take(256).map(u16::from).collect()
        }
        _ => Vec::new(),
    };
    values
}

/// Rules raised by the command itself, whatever its context.
fn command_rule(request: &Request<'_>) -> Option<&'static RuleMeta> {
    Some(match request {
        Request::Diagnostics { sub_function, .. } => match *sub_function {
            DiagnosticSubFunction::FORCE_LISTEN_ONLY => &rule::FORCE_LISTEN_ONLY,
            DiagnosticSubFunction::RESTART_COMMUNICATIONS => &rule::RESTART_COMMUNICATIONS,
            DiagnosticSubFunction::CLEAR_COUNTERS => &rule::CLEAR_COUNTERS,
            _ => return None,
        },
        Request::ReadDeviceId(_) => &rule::READ_DEVICE_ID,
        Request::ReportServerId => &rule::REPORT_SERVER_ID,
        Request::Umas { function, .. } if function.writes_program() => &rule::UMAS_PROGRAM_DOWNLOAD,
        Request::Umas { function, .. } if function.reads_program() => &rule::UMAS_PROGRAM_UPLOAD,
        Request::Umas { function, .. } if *function == crate::modbus::UmasFunction::START_PLC => {
            &rule::UMAS_START
        }
        Request::Umas { function, .. } if *function == crate::modbus::UmasFunction::STOP_PLC => {
            &rule::UMAS_STOP
        }
        Request::ReadFileRecord { .. } => &rule::FILE_READ,
        Request::WriteFileRecord { .. } => &rule::FILE_WRITE,
        Request::Opaque { function, .. }
            if *function == FunctionCode::MODICON_PROGRAM_125
                || *function == FunctionCode::MODICON_PROGRAM_126 =>
        {
            &rule::MODICON_PROGRAMMING
        }
        _ => return None,
    })
}
