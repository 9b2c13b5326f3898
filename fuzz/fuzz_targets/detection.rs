//! Arbitrary frames through the whole agent path with detection on: the packet path, then the
//! engine with its built-in detectors and a policy made from the input (its masters, functions,
//! ranges, bounds, rate and window), with time moving as the input says so folding and window
//! expiry run. None may panic; every alert is one the collector takes (the one validator), and
//! no alert comes without a flow event behind it (its flow had events). The network-level
//! sampler and watch (floods, ARP spoofing) run on the same frames.
#![no_main]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use otwatch_packet::detector::Detector;
use otwatch_packet::flow_table::FlowConfig;
use otwatch_packet::frame::{CapturedPacket, LinkType};
use otwatch_packet::pipeline::{Observer, Pipeline};
use otwatch_rules::alert::Alert;
use otwatch_rules::detect::{DetectionConfig, Engine};
use otwatch_rules::flow::{FlowEvent, FlowInfo};
use otwatch_rules::network::{Tap, Watch};
use otwatch_rules::policy::Policy;
use otwatch_rules::time::Timestamp;
use otwatch_rules::validate;

/// Which flows had events, and how many events there were.
#[derive(Default)]
struct Witness {
    flows: HashSet<u64>,
    events: u64,
}

impl Observer for Witness {
    fn flow_event(&mut self, _ts: Timestamp, flow: &FlowInfo, _event: &FlowEvent<'_>) {
        self.flows.insert(flow.id);
        self.events += 1;
    }
}

struct Both {
    witness: Witness,
    detector: Detector<Vec<Alert>>,
    network: Tap,
}

otwatch_packet::forward_observer!(impl [] Both { witness, detector, network });

/// A policy from eight bytes of input.
fn policy(p: &[u8; 8]) -> Option<Arc<Policy>> {
    let classes = [
        "read",
        "write",
        "diagnostics",
        "identification",
        "programming",
        "other",
    ];
    let functions: Vec<String> = classes
        .iter()
        .enumerate()
        .filter(|(i, _)| p[1] & (1 << i) != 0)
        .map(|(_, c)| format!("\"{c}\""))
        .collect();
    let (lo, hi) = (u16::from(p[2]) * 10, u16::from(p[2]) * 10 + u16::from(p[3]));
    let (min, max) = (
        u16::from(p[4]) * 100,
        u16::from(p[4]) * 100 + u16::from(p[5]) * 50,
    );
    let text = format!(
        r#"version = 1
default_window = "{window}s"

[[asset]]
name = "master"
addresses = ["{master}"]
role = "master"

[[allow]]
from = "master"
to = "any"
functions = [{functions}]
holding_registers = "{lo}-{hi}"
write_values = {{ min = {min}, max = {max} }}
rate = "{rate}/s"

[detectors."recon.unit_id_scan"]
threshold = {threshold}
"#,
        window = 1 + p[6] % 90,
        master = format!("10.0.0.{}", p[0]),
        functions = functions.join(", "),
        rate = 1 + p[7] % 50,
        threshold = 2 + p[7] % 20,
    );
    Policy::parse(&text, "fuzz.toml")
        .ok()
        .map(|(p, _)| Arc::new(p))
}

const LINKS: [LinkType; 3] = [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll];

fuzz_target!(|data: &[u8]| {
    let Some((head, mut rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let policy = if head[0] & 1 == 0 { policy(head) } else { None };
    let engine = Engine::new(DetectionConfig::default(), policy.clone());
    let observer = Both {
        witness: Witness::default(),
        detector: Detector::new(engine, Vec::new()),
        network: Tap::new(&[502]),
    };
    let config = FlowConfig {
        max_flows: 16,
        ..FlowConfig::default()
    };
    let mut pipeline = Pipeline::new(config, observer);
    // Then frames: [selector][length][bytes]...; the selector moves time: a large one jumps
    // by minutes (closing windows with a tick), a slightly smaller one steps the clock back.
    let mut ms = 10_000_000u64;
    let mut stepped_back = false;
    while let [selector, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (frame, after) = tail.split_at(len);
        if *selector >= 0xf0 {
            ms += u64::from(*selector - 0xf0) * 60_000;
            pipeline.tick(Timestamp::from_nanos(ms * 1_000_000));
        } else if *selector >= 0xe8 {
            ms = ms.saturating_sub(u64::from(*selector - 0xe7) * 90_000);
            stepped_back = true;
        } else {
            ms += u64::from(*selector % 16);
        }
        let packet = CapturedPacket {
            ts: Timestamp::from_nanos(ms * 1_000_000),
            link: LINKS[usize::from(*selector) % LINKS.len()],
            data: frame,
            orig_len: frame.len() as u32,
        };
        pipeline.packet(&packet);
        rest = after;
    }
    pipeline.finish();
    let Both {
        witness,
        detector,
        mut network,
    } = pipeline.into_observer();
    let mut alerts = detector.into_sink();
    // Network-level alerts (floods, ARP spoofing) come from the watch over the samples, about
    // no one flow: checked by the one validator, their ids unique like the rest.
    let mut watch = Watch::new(1, "otwatch-agent".into(), Duration::from_secs(60), policy);
    let mut network_alerts = Vec::new();
    let (samples, mark) = (network.take(), network.watermark());
    watch.submit(0, samples, mark, &mut |a| network_alerts.push(a));
    watch.done(0, &mut |a| network_alerts.push(a));
    for a in &network_alerts {
        assert_eq!(
            validate::alert(a),
            Ok(()),
            "the collector would refuse {a:?}"
        );
        assert_eq!(a.flow, 0, "{a:?}");
    }
    for a in &alerts {
        assert_eq!(
            validate::alert(a),
            Ok(()),
            "the collector would refuse {a:?}"
        );
        assert!(
            witness.flows.contains(&a.flow),
            "an alert for flow {} that had no event: {a:?}",
            a.flow
        );
    }
    assert!(alerts.is_empty() || witness.events > 0);
    alerts.extend(network_alerts);
    // While time only goes forward, an id names one alert (after a step back, a window may
    // restart at a time an earlier one started).
    if !stepped_back {
        let mut ids = HashSet::new();
        for a in &alerts {
            assert!(
                ids.insert(&a.id),
                "two alerts with id {}: {alerts:#?}",
                a.id
            );
        }
    }
});
