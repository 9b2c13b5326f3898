//! The detection engine: built-in detectors and the policy, fed with flow events and capture
//! time, producing alerts folded per (rule, source, destination, unit).
//!
//! The engine is pure: the agent hands it every [`FlowEvent`] with its flow and time and writes
//! out the [`Alert`]s it returns.

mod availability;
mod builtin;
mod fold;
mod memo;
mod pairs;
mod window;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::Direction;
use crate::alert::{Alert, FoldKey, RuleMeta, SCHEMA_VERSION, Seen, Severity, rule};
use crate::flow::{FlowEvent, FlowInfo};
use crate::modbus::{ExceptionCode, FunctionCode, Request};
use crate::policy::matcher::RateState;
use crate::policy::{AlertRule, Policy, ViolationKind};
use crate::session::Event;
use crate::time::Timestamp;
use crate::transaction::{Outcome, Transaction};
use crate::validate;
pub use availability::DEFAULT_SILENCE;
use availability::Liveness;
use builtin::{Builtins, Limits};
use fold::Fold;
use memo::Verdict;
use pairs::{PairRef, PairState, Pairs, slot};

/// Settings that do not come from the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectionConfig {
    /// The agent's name, carried in every alert.
    pub agent: String,
    /// Fold window when neither the rule nor the policy sets one.
    pub default_window: Duration,
    /// Without a policy, pairs first seen after this much capture time raise
    /// `baseline.new_pair`.
    pub baseline: Duration,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            agent: "otwatch-agent".into(),
            default_window: Duration::from_secs(60),
            baseline: Duration::from_secs(600),
        }
    }
}

/// Which rule a finding belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RuleKey {
    /// A built-in rule.
    Builtin(&'static str),
    /// A policy `[[alert]]` rule, by index.
    Custom(usize),
}

/// One occurrence of something alert-worthy, before thresholds and folding.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    rule: RuleKey,
    /// Id, title, severity and techniques resolved from the rule and the policy's tuning.
    id: Arc<str>,
    title: Arc<str>,
    severity: Severity,
    technique: Arc<[String]>,
    ts: Timestamp,
    flow: u64,
    src: SocketAddr,
    dst: SocketAddr,
    unit_id: Option<u8>,
    function: Option<FunctionCode>,
    address: Option<u16>,
    quantity: Option<u16>,
    values: Option<Vec<u16>>,
    exception: Option<ExceptionCode>,
    evidence: Option<String>,
    message: Option<String>,
    counted: Counted,
}

/// What names a finding's rule in its alert: id, title, severity, techniques.
struct Identity {
    id: Arc<str>,
    title: Arc<str>,
    severity: Severity,
    technique: Arc<[String]>,
}

impl Identity {
    /// A built-in rule's, at `severity` (its own unless the policy tunes it).
    fn builtin(meta: &'static RuleMeta, severity: Severity) -> Self {
        Self {
            id: meta.id.into(),
            title: meta.title.into(),
            severity,
            technique: meta.technique.iter().map(|t| t.to_string()).collect(),
        }
    }
}

impl Finding {
    /// A finding of `rule` at `ts` on flow `flow`, by `src` against `dst`, with what the
    /// traffic showed (`facts`; its `from_server` has already decided `src` and `dst`).
    fn new(
        rule: RuleKey,
        identity: Identity,
        ts: Timestamp,
        flow: u64,
        (src, dst): (SocketAddr, SocketAddr),
        facts: Facts,
    ) -> Self {
        Self {
            rule,
            id: identity.id,
            title: identity.title,
            severity: identity.severity,
            technique: identity.technique,
            ts,
            flow,
            src,
            dst,
            unit_id: facts.unit_id,
            function: facts.function,
            address: facts.address,
            quantity: facts.quantity,
            values: facts.values,
            exception: facts.exception,
            evidence: facts.evidence,
            message: facts.message,
            counted: facts.counted,
        }
    }

    fn into_alert(
        self,
        agent: &str,
        count: u64,
        first_ts: Timestamp,
        seq: u64,
        seen: Option<Seen>,
    ) -> Alert {
        // Within the bounds the collector takes (a policy's message, an error's text).
        let mut title = self.title.to_string();
        validate::truncate(&mut title, validate::MAX_TITLE);
        let message = self.message.map(|mut m| {
            validate::truncate(&mut m, validate::MAX_MESSAGE);
            m
        });
        let mut alert = Alert {
            schema: SCHEMA_VERSION,
            id: String::new(),
            ts: self.ts,
            agent: agent.to_string(),
            severity: self.severity,
            rule: self.id.to_string(),
            title,
            technique: self.technique.to_vec(),
            src_ip: self.src.ip(),
            src_port: self.src.port(),
            dst_ip: self.dst.ip(),
            dst_port: self.dst.port(),
            unit_id: self.unit_id,
            function_code: self.function.map(|f| f.code()),
            function: self.function.map(|f| f.name().to_string()),
            address: self.address,
            quantity: self.quantity,
            values: self.values,
            exception: self.exception.map(|e| e.name().to_string()),
            count,
            first_ts,
            evidence: self.evidence,
            flow: self.flow,
            message,
            seen,
        };
        // From the alert's own fields, as the collector derives it again.
        alert.id = alert.derived_id(seq);
        alert
    }
}

/// The facts of one occurrence, filled in by detectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    /// The actor is the server (exception storms, spoofed responses) rather than the client.
    pub from_server: bool,
    pub unit_id: Option<u8>,
    pub function: Option<FunctionCode>,
    pub address: Option<u16>,
    pub quantity: Option<u16>,
    pub values: Option<Vec<u16>>,
    pub exception: Option<ExceptionCode>,
    pub evidence: Option<String>,
    pub message: Option<String>,
    /// What a detector that counts distinct things counted besides this occurrence: unit ids
    /// and address ranges, for the alert's `seen`.
    pub counted: Counted,
}

/// Distinct unit ids and address ranges (first address, quantity) a counting detector saw
/// in its window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counted {
    pub units: Vec<u8>,
    pub ranges: Vec<(u16, u16)>,
}

impl Facts {
    /// Facts of a request: unit, function, range and written values.
    pub fn of_request(unit_id: u8, request: &Request<'_>, raw: &[u8]) -> Self {
        let (address, quantity) = match request.write_range().or(request.read_range()) {
            Some((_, a, q)) => (Some(a), Some(q)),
            None => (None, None),
        };
        let values = match *request {
            Request::WriteSingleRegister { value, .. } => Some(vec![value]),
            Request::WriteSingleCoil { value, .. } => Some(vec![u16::from(value)]),
            Request::WriteMultipleRegisters { values, .. }
            | Request::ReadWriteMultipleRegisters { values, .. } => Some(values.iter().collect()),
            Request::WriteMultipleCoils { values, .. } => {
                Some(values.iter().map(u16::from).collect())
            }
            _ => None,
        };
        Self {
            unit_id: Some(unit_id),
            function: Some(request.function()),
            address,
            quantity,
            values,
            evidence: evidence(raw),
            ..Self::default()
        }
    }
}

/// Hex of at most the first 64 bytes of a frame.
pub(crate) fn evidence(raw: &[u8]) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    use std::fmt::Write as _;
    let mut out = String::with_capacity(128);
    for b in raw.iter().take(64) {
        let _ = write!(out, "{b:02x}");
    }
    Some(out)
}

/// A finding of the event [`Engine::observe_judged`] examined.
#[derive(Debug, Clone, Copy)]
pub enum Judged<'a> {
    /// Of a built-in rule (policy violations included: `policy.unauthorized_write`, ...).
    Builtin(&'static RuleMeta),
    /// Of one of the policy's `[[alert]]` rules.
    Custom(&'a AlertRule),
}

impl Judged<'_> {
    /// The rule id its alert carries.
    pub fn rule_id(&self) -> String {
        match self {
            Self::Builtin(meta) => meta.id.to_string(),
            Self::Custom(rule) => AlertRule::rule_id_of(&rule.name),
        }
    }
}

/// Built-in detectors plus policy evaluation, with thresholds and folding.
pub struct Engine {
    config: DetectionConfig,
    policy: Option<Arc<Policy>>,
    builtins: Builtins,
    fold: Fold,
    pairs: Pairs,
    last_flush: Timestamp,
    /// How long a device may stay silent before it is taken for down.
    silence: Duration,
}

impl Engine {
    /// An engine with the built-in detectors and, if given, a policy.
    pub fn new(config: DetectionConfig, policy: Option<Arc<Policy>>) -> Self {
        let builtins = Builtins::new(Limits::resolve(policy.as_deref(), &config));
        Self {
            config,
            silence: silence_of(policy.as_deref()),
            policy,
            builtins,
            fold: Fold::default(),
            pairs: Pairs::default(),
            last_flush: Timestamp::default(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.policy.as_ref()
    }

    /// Puts a new policy in force (or none). Detector state carries over; policy caches and
    /// windows of the old policy's alert rules are dropped.
    pub fn set_policy(&mut self, policy: Option<Arc<Policy>>, out: &mut impl FnMut(Alert)) {
        self.fold.finish(&self.config.agent, out);
        self.policy = policy;
        self.builtins
            .configure(Limits::resolve(self.policy.as_deref(), &self.config));
        self.silence = silence_of(self.policy.as_deref());
        self.pairs.reset_policy();
    }

    /// Raises an alert about the agent itself (a rejected policy reload, for instance).
    pub fn agent_alert(
        &mut self,
        meta: &'static RuleMeta,
        ts: Timestamp,
        agent_addr: SocketAddr,
        message: String,
        out: &mut impl FnMut(Alert),
    ) {
        out(agent_alert(
            &self.config.agent,
            meta,
            ts,
            agent_addr,
            message,
        ));
    }

    /// Examines one flow event.
    #[inline(always)]
    pub fn observe(
        &mut self,
        ts: Timestamp,
        flow: &FlowInfo,
        event: &FlowEvent<'_>,
        out: &mut impl FnMut(Alert),
    ) {
        self.observe_judged(ts, flow, event, out, &mut |_| {});
    }

    /// [`Engine::observe`], also telling `judged` of every finding of this event itself, before
    /// thresholds and folding decide which become alerts: what an inline guard needs to decide
    /// on the request in hand. With a `judged` that does nothing this is `observe`.
    #[inline(always)]
    pub fn observe_judged(
        &mut self,
        ts: Timestamp,
        flow: &FlowInfo,
        event: &FlowEvent<'_>,
        out: &mut impl FnMut(Alert),
        judged: &mut impl FnMut(Judged<'_>),
    ) {
        if ts.passed(self.last_flush, Duration::from_secs(1)) {
            self.flush(ts, out);
        }
        let Self {
            config,
            policy,
            builtins,
            fold,
            pairs,
            silence,
            ..
        } = self;
        let policy = policy.as_deref();
        // Only requests (and, when the policy bounds values read back, answered transactions)
        // need the pair's state: everything else skips the lookup. A request's shape is what
        // the pair's memo knows it by. Availability hears of requests and answers only while
        // a device is silent or down, and of what connections do on the way.
        let (interned, shape) = match event {
            FlowEvent::Session(Event::Request {
                unit_id, request, ..
            }) => {
                let interned = pairs.intern(flow);
                if pairs.watching() {
                    let noted = &mut |n| raise_noted((fold, config, policy), n, ts, flow, out);
                    let request = (interned.0, *unit_id);
                    liveness_request(pairs, request, (ts, *silence), flow, noted);
                }
                (Some(interned), memo::shape(*unit_id, request))
            }
            FlowEvent::Session(Event::Transaction(t)) if t.outcome != Outcome::Unanswered => {
                let interned = (t.outcome == Outcome::Answered
                    && policy.is_some_and(|p| p.checks_reads))
                .then(|| pairs.intern(flow));
                // A flow's first answer makes the pair known to availability.
                if pairs.watching() || flow.first_answer == t.response_ts {
                    let id = interned.map(|i| i.0);
                    let noted = &mut |n| raise_noted((fold, config, policy), n, ts, flow, out);
                    liveness_answer(pairs, id, (ts, *silence), flow, t, noted);
                }
                (interned, None)
            }
            FlowEvent::Session(Event::Transaction(_))
            | FlowEvent::Opened
            | FlowEvent::Accepted
            | FlowEvent::Reset { by_server: true }
            | FlowEvent::Retransmission { .. }
            | FlowEvent::Gap {
                direction: Direction::ToClient,
                ..
            }
            | FlowEvent::Closed(_) => {
                let noted = &mut |n| raise_noted((fold, config, policy), n, ts, flow, out);
                connection_event(pairs, (ts, *silence), flow, event, noted);
                (None, None)
            }
            _ => (None, None),
        };
        let mut pair = interned.and_then(|(id, new)| {
            pairs
                .get_mut(id)
                .map(|state| PairRef::new(id, new, state, shape))
        });
        let mut findings: Vec<Pending> = Vec::new();
        builtins.observe(
            ts,
            flow,
            event,
            pair.as_mut(),
            config,
            &mut |meta, facts| findings.push(Pending::Builtin(meta, facts)),
        );
        if let Some(mut pair) = pair {
            if let Some(policy) = policy {
                policy_checks(policy, &mut pair, ts, flow, event, &mut findings);
            }
            pair.remember();
        }
        if !findings.is_empty() {
            for pending in &findings {
                match pending {
                    Pending::Builtin(meta, _) => judged(Judged::Builtin(meta)),
                    Pending::Custom(index, _) => {
                        if let Some(rule) = policy.and_then(|p| p.alerts.get(*index)) {
                            judged(Judged::Custom(rule));
                        }
                    }
                }
            }
            raise_findings((fold, config, policy), findings, ts, flow, out);
        }
    }

    /// Judges the silences of devices as of `now` and closes fold windows that ended before.
    pub fn flush(&mut self, now: Timestamp, out: &mut impl FnMut(Alert)) {
        self.last_flush = now;
        let Self {
            config,
            policy,
            fold,
            pairs,
            silence,
            ..
        } = self;
        pairs.judge_silences(now, *silence, &mut |outage| {
            raise_outage(fold, config, policy.as_deref(), outage, out)
        });
        self.fold.flush(now, &self.config.agent, out);
    }

    /// Capture time stepped back from `before` to `now` (the capture's clock was corrected).
    /// Windows opened
    /// in what is now the future would otherwise hold for as long as the step: every fold
    /// window closes (its folded occurrences reported) and every detector window restarts.
    /// What the detectors learnt stays: the pairs seen, the time the baseline has run.
    pub fn clock_stepped(
        &mut self,
        before: Timestamp,
        now: Timestamp,
        out: &mut impl FnMut(Alert),
    ) {
        self.fold.finish(&self.config.agent, out);
        self.pairs.restart_windows();
        self.builtins.clock_stepped(before, now);
        self.last_flush = now;
    }

    /// Closes every fold window (end of capture or shutdown).
    pub fn finish(&mut self, out: &mut impl FnMut(Alert)) {
        self.fold.finish(&self.config.agent, out);
    }
}

/// How long a device may stay silent: the `window` the policy tunes
/// `availability.device_unresponsive` with, else [`DEFAULT_SILENCE`].
fn silence_of(policy: Option<&Policy>) -> Duration {
    policy
        .and_then(|p| p.tuning(rule::DEVICE_UNRESPONSIVE.id))
        .and_then(|t| t.window)
        .unwrap_or(DEFAULT_SILENCE)
}

/// Raises the alert of a device's outage.
fn raise_outage(
    fold: &mut Fold,
    config: &DetectionConfig,
    policy: Option<&Policy>,
    outage: Box<availability::Outage>,
    out: &mut impl FnMut(Alert),
) {
    let outage = *outage;
    raise(
        fold,
        config,
        policy,
        &rule::DEVICE_UNRESPONSIVE,
        outage.ts,
        &outage.flow,
        outage.facts,
        out,
    );
}

/// What availability found on one event, raised at once (a silence judged before the event
/// comes before a recovery the event shows): rare, and apart from the event's path.
enum Noted {
    /// A silence that became an outage before the event.
    Outage(Box<availability::Outage>),
    /// The device answers again after an outage: the facts of its answer.
    Recovered(Facts),
}

/// Tells availability of a request at `ts` on pair `id` to `unit` while some pair is
/// watched (`silence`: how long a device may be silent): an attempt, if this pair's device is
/// silent. A silence that became an outage before it goes to `noted`.
#[cold]
#[inline(never)]
fn liveness_request(
    pairs: &mut Pairs,
    (id, unit): (u32, u8),
    (ts, silence): (Timestamp, Duration),
    flow: &FlowInfo,
    noted: &mut dyn FnMut(Noted),
) {
    let Some(live) = pairs.live_mut(id) else {
        return;
    };
    if live.quiet_now() {
        return;
    }
    if live.due(ts) {
        judge(live, ts, silence, noted);
    }
    // A broadcast is never answered, by design, so no attempt.
    if flow.expects_answer(unit) {
        live.request(flow);
    }
}

/// Tells availability of an answer (`t`, answered or unsolicited) at `ts`, the first of its
/// flow or one while some pair is watched (`interned`: the pair's id when the engine interned
/// it already). The pair's first answer makes it known; an answer ends its device's silence,
/// and the first after an outage goes to `noted`. Pairs neither silent nor down learn nothing
/// here, so what they know does not depend on other pairs (on which capture worker holds them).
#[cold]
#[inline(never)]
fn liveness_answer(
    pairs: &mut Pairs,
    interned: Option<u32>,
    (ts, silence): (Timestamp, Duration),
    flow: &FlowInfo,
    t: &Transaction<'_>,
    noted: &mut dyn FnMut(Noted),
) {
    let Some(id) = interned.or_else(|| pairs.find(flow)) else {
        return;
    };
    let Some(slot) = pairs.liveness(id) else {
        return;
    };
    let first = flow.first_answer == t.response_ts;
    let Some(live) = slot.as_deref_mut() else {
        if first {
            *slot = Some(Liveness::new(ts, flow));
        }
        return;
    };
    if live.quiet_now() {
        if first {
            live.heard(flow);
        }
        return;
    }
    if live.due(ts) {
        judge(live, ts, silence, noted);
    }
    if live.answered(ts) {
        recovered(live, t, noted);
    }
    if live.quiet_now() {
        pairs.unwatch(id);
    }
}

/// The shortest request frame (an RTU frame: unit, function, one byte, CRC): resent bytes
/// fewer than this are a keepalive probe, not a request resent.
const MIN_REQUEST: usize = 5;

/// What availability hears besides requests and answers, all rare: requests the tracker gave
/// up on, connections opened, accepted, reset or ended, retransmissions, bytes lost. What a
/// pair knows starts here, from a flow on which the device answered.
#[cold]
#[inline(never)]
fn connection_event(
    pairs: &mut Pairs,
    (ts, silence): (Timestamp, Duration),
    flow: &FlowInfo,
    event: &FlowEvent<'_>,
    noted: &mut dyn FnMut(Noted),
) {
    if matches!(event, FlowEvent::Opened) && !flow.handshake_seen {
        return;
    }
    let Some(id) = pairs.find(flow) else {
        return;
    };
    let Some(slot) = pairs.liveness(id) else {
        return;
    };
    let live = match (slot, flow.last_answer) {
        (Some(live), _) => live,
        (slot @ None, Some(answered)) => slot.insert(Liveness::new(answered, flow)),
        (None, None) => return,
    };
    if flow.server.port() != live.port {
        return;
    }
    if live.due(ts) {
        judge(live, ts, silence, noted);
    }
    let silent = match event {
        FlowEvent::Session(Event::Transaction(t)) => {
            flow.expects_answer(t.unit_id) && live.gave_up(ts, t, flow, silence)
        }
        FlowEvent::Opened => {
            live.connecting(ts, flow, silence);
            true
        }
        FlowEvent::Accepted => {
            live.accepted(silence);
            false
        }
        FlowEvent::Reset { .. } => {
            live.reset_by_device(ts);
            false
        }
        // A keepalive probe resends one byte: not a request resent.
        FlowEvent::Retransmission {
            direction: Direction::ToServer,
            bytes,
        } => {
            if *bytes >= MIN_REQUEST {
                live.retransmitted(flow);
            }
            false
        }
        FlowEvent::Closed(_) => {
            live.heard(flow);
            false
        }
        // The device sent bytes: resent, or lost by the capture.
        _ => {
            live.sent_something(ts);
            false
        }
    };
    if live.quiet_now() {
        pairs.unwatch(id);
    } else if silent {
        pairs.watch(id);
    }
}

/// Judges a pair's silence before an event at `ts`; an outage goes to `noted`.
#[cold]
#[inline(never)]
fn judge(live: &mut Liveness, ts: Timestamp, silence: Duration, noted: &mut dyn FnMut(Noted)) {
    if let availability::Judgement::Outage(o) = live.judge(ts, silence) {
        noted(Noted::Outage(o));
    }
}

/// The device answered (`t`) after an outage: its recovery goes to `noted`.
#[cold]
#[inline(never)]
fn recovered(live: &mut Liveness, t: &Transaction<'_>, noted: &mut dyn FnMut(Noted)) {
    if let Some(downtime) = live.recovered() {
        noted(Noted::Recovered(recovery(t, downtime)));
    }
}

/// Raises what availability noted on one event at `ts` of `flow`.
#[cold]
#[inline(never)]
fn raise_noted(
    (fold, config, policy): (&mut Fold, &DetectionConfig, Option<&Policy>),
    noted: Noted,
    ts: Timestamp,
    flow: &FlowInfo,
    out: &mut impl FnMut(Alert),
) {
    match noted {
        Noted::Outage(outage) => raise_outage(fold, config, policy, outage, out),
        Noted::Recovered(facts) => raise(
            fold,
            config,
            policy,
            &rule::DEVICE_RECOVERED,
            ts,
            flow,
            facts,
            out,
        ),
    }
}

/// The facts of a device's first answer after an outage of `downtime`: its transaction.
fn recovery(t: &Transaction<'_>, downtime: Duration) -> Facts {
    Facts {
        unit_id: Some(t.unit_id),
        function: t.request.map(|r| r.function()),
        message: Some(format!(
            "the device answers again after {:.1} s without answering",
            downtime.as_secs_f64()
        )),
        ..Facts::default()
    }
}

/// Raises what the detectors and the policy found on one event at `ts` of `flow`: rare, so
/// apart from the event's path.
#[cold]
#[inline(never)]
fn raise_findings(
    (fold, config, policy): (&mut Fold, &DetectionConfig, Option<&Policy>),
    findings: Vec<Pending>,
    ts: Timestamp,
    flow: &FlowInfo,
    out: &mut impl FnMut(Alert),
) {
    for pending in findings {
        match pending {
            Pending::Builtin(meta, facts) => {
                raise(fold, config, policy, meta, ts, flow, facts, out)
            }
            Pending::Custom(index, facts) => {
                if let Some(policy) = policy {
                    raise_custom(fold, config, policy, index, ts, flow, facts, out);
                }
            }
        }
    }
}

/// A finding waiting for its rule's thresholds and folding.
enum Pending {
    /// Of a built-in rule.
    Builtin(&'static RuleMeta, Facts),
    /// Of a policy alert rule, by index.
    Custom(usize, Facts),
}

/// The policy's checks of one event. Most requests are polls whose remembered verdict is the
/// whole check: that path is kept small enough to inline, the rest is a call away.
#[inline]
fn policy_checks(
    policy: &Policy,
    pair: &mut PairRef<'_>,
    ts: Timestamp,
    flow: &FlowInfo,
    event: &FlowEvent<'_>,
    findings: &mut Vec<Pending>,
) {
    let FlowEvent::Session(event) = event else {
        return;
    };
    let remembered = match event {
        Event::Request { .. } => {
            let remembered = remembered_verdict(pair, ts);
            // A remembered verdict of a pair without alert rules is the whole check: the
            // candidate rules are not read.
            if remembered.is_some_and(|v| v.whole) {
                return;
            }
            remembered
        }
        _ => None,
    };
    full_policy_checks(policy, pair, ts, flow, event, remembered, findings);
}

/// The verdict remembered for the request, if it still holds: its rule has no rate, or a token
/// of the rate was taken.
fn remembered_verdict(pair: &mut PairRef<'_>, ts: Timestamp) -> Option<Verdict> {
    let rates = &mut pair.state.rates.0;
    pair.recall.verdict().filter(|v| {
        !v.rated
            || rates
                .iter_mut()
                .find(|(r, _)| *r == v.rule)
                .and_then(|(_, bucket)| bucket.as_mut())
                .is_some_and(|(rate, state)| state.take(*rate, ts))
    })
}

/// The policy's checks of one event, past a remembered verdict (`remembered`, for a request).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn full_policy_checks(
    policy: &Policy,
    pair: &mut PairRef<'_>,
    ts: Timestamp,
    flow: &FlowInfo,
    event: &Event<'_>,
    remembered: Option<Verdict>,
    findings: &mut Vec<Pending>,
) {
    let candidates_of = |policy: &Policy| policy.candidates(flow.client.ip(), flow.server.ip());
    match event {
        Event::Request {
            unit_id,
            request,
            raw,
            ..
        } => {
            let PairRef {
                state: PairState {
                    candidates, rates, ..
                },
                recall,
                ..
            } = pair;
            let candidates = candidates.get_or_insert_with(|| candidates_of(policy));
            let violation = if remembered.is_some() {
                None
            } else {
                let mut rated = false;
                let verdict =
                    policy.allowing_rule(candidates, ts, *unit_id, request, |rule, rate| {
                        rated = true;
                        slot(&mut rates.0, rule)
                            .get_or_insert_with(|| (rate, RateState::new(rate, ts)))
                            .1
                            .take(rate, ts)
                    });
                match verdict {
                    Ok(rule) => {
                        if candidates.timeless {
                            recall.set_verdict(Verdict {
                                rule,
                                rated,
                                whole: candidates.alerts.is_empty(),
                            });
                        }
                        None
                    }
                    Err(v) => Some(v),
                }
            };
            if let Some(v) = violation {
                let meta = match v.kind {
                    ViolationKind::UnknownMaster => &rule::UNKNOWN_MASTER,
                    ViolationKind::UnauthorizedRead => &rule::UNAUTHORIZED_READ,
                    ViolationKind::UnauthorizedWrite => &rule::UNAUTHORIZED_WRITE,
                    ViolationKind::UnauthorizedFunction => &rule::UNAUTHORIZED_FUNCTION,
                    ViolationKind::WriteOutsideRanges => &rule::WRITE_OUTSIDE_RANGES,
                    ViolationKind::SetpointOutOfBounds => &rule::SETPOINT_OUT_OF_BOUNDS,
                    ViolationKind::ProcessValueOutOfBounds => &rule::PROCESS_VALUE_OUT_OF_BOUNDS,
                    ViolationKind::RateExceeded => &rule::RATE_EXCEEDED,
                    ViolationKind::OutsideHours => &rule::OUTSIDE_HOURS,
                };
                let mut facts = Facts::of_request(*unit_id, request, raw);
                facts.message = Some(match &v.closest {
                    Some(rule) => format!("{} (closest allow rule: {rule})", v.detail),
                    None => v.detail.clone(),
                });
                findings.push(Pending::Builtin(meta, facts));
            }
            for &i in &candidates.alerts {
                if policy.alert_matches(i, ts, *unit_id, request) {
                    findings.push(Pending::Custom(
                        i,
                        Facts::of_request(*unit_id, request, raw),
                    ));
                }
            }
        }
        Event::Transaction(t) if t.outcome == Outcome::Answered => {
            let (Some(request), Some(response)) = (&t.request, &t.response) else {
                return;
            };
            let candidates = pair
                .state
                .candidates
                .get_or_insert_with(|| candidates_of(policy));
            if let Some((v, address, value)) =
                policy.check_read_values(candidates, ts, t.unit_id, request, response)
            {
                // The register out of its bounds, not the whole read.
                let mut facts = Facts::of_request(t.unit_id, request, &[]);
                if address.is_some() {
                    facts.address = address;
                    facts.quantity = Some(1);
                }
                facts.values = Some(vec![value]);
                facts.from_server = true;
                facts.message = Some(v.detail);
                findings.push(Pending::Builtin(&rule::PROCESS_VALUE_OUT_OF_BOUNDS, facts));
            }
        }
        _ => {}
    }
}

#[allow(clippy::too_many_arguments)]
fn raise(
    fold: &mut Fold,
    config: &DetectionConfig,
    policy: Option<&Policy>,
    meta: &'static RuleMeta,
    ts: Timestamp,
    flow: &FlowInfo,
    facts: Facts,
    out: &mut impl FnMut(Alert),
) {
    let tuning = policy.and_then(|p| p.tuning(meta.id));
    if tuning.and_then(|t| t.enabled) == Some(false) {
        return;
    }
    let (src, dst) = if facts.from_server {
        (flow.server, flow.client)
    } else {
        (flow.client, flow.server)
    };
    if tuning
        .and_then(|t| t.suppress.as_ref())
        .is_some_and(|s| s.contains(src.ip()))
    {
        return;
    }
    let window = tuning
        .and_then(|t| t.window)
        .or(policy.and_then(|p| p.default_window))
        .unwrap_or(config.default_window);
    let threshold = builtin::fold_threshold(meta, tuning.and_then(|t| t.threshold));
    let severity = tuning.and_then(|t| t.severity).unwrap_or(meta.severity);
    let finding = Finding::new(
        RuleKey::Builtin(meta.id),
        Identity::builtin(meta, severity),
        ts,
        flow.id,
        (src, dst),
        facts,
    );
    fold.add(finding, window, threshold, meta.key, &config.agent, out);
}

#[allow(clippy::too_many_arguments)]
fn raise_custom(
    fold: &mut Fold,
    config: &DetectionConfig,
    policy: &Policy,
    index: usize,
    ts: Timestamp,
    flow: &FlowInfo,
    facts: Facts,
    out: &mut impl FnMut(Alert),
) {
    let Some(rule) = policy.alerts.get(index) else {
        return;
    };
    let identity = Identity {
        id: AlertRule::rule_id_of(&rule.name).into(),
        title: rule
            .message
            .clone()
            .unwrap_or_else(|| format!("Policy alert rule {:?}", rule.name))
            .into(),
        severity: rule.severity,
        technique: rule.technique.clone().into(),
    };
    // A policy rule matches requests: the rule's message, never an exception.
    let facts = Facts {
        exception: None,
        message: rule.message.clone(),
        ..facts
    };
    let finding = Finding::new(
        RuleKey::Custom(index),
        identity,
        ts,
        flow.id,
        (flow.client, flow.server),
        facts,
    );
    let window = rule
        .window
        .or(policy.default_window)
        .unwrap_or(config.default_window);
    fold.add(
        finding,
        window,
        rule.threshold,
        FoldKey::Unit,
        &config.agent,
        out,
    );
}

/// An alert about agent `agent` itself (a rejected policy reload, a full outbox), from and
/// to its own address; its id derives from the rule and `ts`.
pub fn agent_alert(
    agent: &str,
    meta: &'static RuleMeta,
    ts: Timestamp,
    agent_addr: SocketAddr,
    message: String,
) -> Alert {
    let facts = Facts {
        message: Some(message),
        ..Facts::default()
    };
    let finding = Finding::new(
        RuleKey::Builtin(meta.id),
        Identity::builtin(meta, meta.severity),
        ts,
        0,
        (agent_addr, agent_addr),
        facts,
    );
    finding.into_alert(agent, 1, ts, 0, None)
}

#[cfg(test)]
mod tests;
