//! Replays a capture's frames onto an interface at a fixed rate, like `tcpreplay`: the traffic
//! source of the capture load benchmark (`agent/benches/capture-load.sh`). Frames are sent raw
//! through pnet's `AF_PACKET` channel, from memory, paced in bursts.

use std::path::Path;
use std::time::{Duration, Instant};

use pcap_file::pcap::PcapReader;
use pnet_datalink::Channel;

/// What a replay sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sent {
    /// Frames sent.
    pub frames: u64,
    /// Frames the kernel refused (counted, not retried).
    pub failed: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Reads up to `limit` frames of a classic pcap into memory.
pub fn load(pcap: &Path, limit: usize) -> std::io::Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(pcap)?;
    let mut reader =
        PcapReader::new(std::io::BufReader::new(file)).map_err(std::io::Error::other)?;
    let mut frames = Vec::new();
    while frames.len() < limit {
        match reader.next_packet() {
            Some(Ok(p)) => frames.push(p.data.into_owned()),
            Some(Err(e)) => return Err(std::io::Error::other(e)),
            None => break,
        }
    }
    Ok(frames)
}

/// Sends `count` frames, cycling through `frames`, on `interface` at `pps` frames per second
/// (0: as fast as possible).
pub fn send(interface: &str, frames: &[Vec<u8>], count: u64, pps: u64) -> std::io::Result<Sent> {
    let iface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == interface)
        .ok_or_else(|| std::io::Error::other(format!("no interface {interface}")))?;
    let config = pnet_datalink::Config {
        write_buffer_size: 65536,
        ..pnet_datalink::Config::default()
    };
    let Channel::Ethernet(mut tx, _) = pnet_datalink::channel(&iface, config)? else {
        return Err(std::io::Error::other("not an Ethernet channel"));
    };
    if frames.is_empty() {
        return Err(std::io::Error::other("no frames to send"));
    }
    const BURST: u64 = 32;
    let started = Instant::now();
    let mut sent = Sent {
        frames: 0,
        failed: 0,
        elapsed: Duration::ZERO,
    };
    let mut next = frames.iter().cycle();
    while sent.frames < count {
        for _ in 0..BURST.min(count - sent.frames) {
            let frame = next.next().map(Vec::as_slice).unwrap_or_default();
            match tx.send_to(frame, None) {
                Some(Ok(())) => {}
                _ => sent.failed += 1,
            }
            sent.frames += 1;
        }
        if pps > 0 {
            let due = Duration::from_secs_f64(sent.frames as f64 / pps as f64);
            while started.elapsed() < due {
                std::hint::spin_loop();
            }
        }
    }
    sent.elapsed = started.elapsed();
    Ok(sent)
}
