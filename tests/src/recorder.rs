//! Recording what real Modbus peers exchange, and writing it as a capture.
//!
//! A TCP proxy sits between a client and a server on loopback and records every chunk each side
//! wrote, with its time. [`write_pcap`] turns the recording into an Ethernet/IPv4/TCP capture
//! with a handshake, correct sequence and acknowledgement numbers and a FIN at the end: what a
//! SPAN port would have shown, without needing root to capture.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One write by one side.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// When the proxy read it.
    pub at: Instant,
    /// Client to server?
    pub to_server: bool,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// The chunks of one proxied connection, in the order the proxy saw them.
pub type Recording = Arc<Mutex<Vec<Chunk>>>;

/// Starts a proxy in front of `server` and returns its address and the recording it fills.
/// It serves one connection.
pub async fn record_proxy(server: SocketAddr) -> std::io::Result<(SocketAddr, Recording)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let recording: Recording = Arc::default();
    let rec = recording.clone();
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let Ok(upstream) = TcpStream::connect(server).await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (sr, sw) = upstream.into_split();
        let a = tokio::spawn(pump(cr, sw, true, rec.clone()));
        let b = tokio::spawn(pump(sr, cw, false, rec));
        let _ = tokio::join!(a, b);
    });
    Ok((addr, recording))
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    to_server: bool,
    recording: Recording,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Ok(mut r) = recording.lock() {
            r.push(Chunk {
                at: Instant::now(),
                to_server,
                bytes: buf[..n].to_vec(),
            });
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// An Ethernet/IP/TCP frame from `src` to `dst` (both IPv4 or both IPv6) with MACs
/// `(source, destination)`, flags given as letters (`S`yn, `A`ck, `P`ush, `F`in) and `payload`.
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    macs: ([u8; 6], [u8; 6]),
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: &str,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1);
    let ip = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => builder.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => builder.ipv6(s.octets(), d.octets(), 64),
        _ => return None,
    };
    let mut tcp = ip.tcp(src.port(), dst.port(), seq, 65535);
    if flags.contains('S') {
        tcp = tcp.syn();
    }
    if flags.contains('A') {
        tcp = tcp.ack(ack);
    }
    if flags.contains('P') {
        tcp = tcp.psh();
    }
    if flags.contains('F') {
        tcp = tcp.fin();
    }
    let mut frame = Vec::with_capacity(payload.len() + 64);
    tcp.write(&mut frame, payload).ok()?;
    Some(frame)
}

/// Endpoints to put in the synthesized capture.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// Client address and port.
    pub client: ([u8; 4], u16),
    /// Server address and port.
    pub server: ([u8; 4], u16),
}

/// Writes `chunks` as a classic pcap with handshake, data segments and FIN exchange.
pub fn write_pcap(path: &Path, chunks: &[Chunk], endpoints: Endpoints) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut writer = PcapWriter::new(file).map_err(std::io::Error::other)?;
    let start = chunks.first().map_or_else(Instant::now, |c| c.at);
    let base = Duration::from_secs(1_700_000_000);
    let (mut cseq, mut sseq) = (1_000_000u32, 2_000_000u32);
    let mut last = Duration::ZERO;
    let mut frames: Vec<(Duration, Vec<u8>)> = Vec::new();
    let mut push = |at: Duration, to_server: bool, seq: u32, ack: u32, flags: &str, data: &[u8]| {
        let (client_mac, server_mac) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let (src, dst, src_mac, dst_mac) = if to_server {
            (endpoints.client, endpoints.server, client_mac, server_mac)
        } else {
            (endpoints.server, endpoints.client, server_mac, client_mac)
        };
        let src = SocketAddr::from((src.0, src.1));
        let dst = SocketAddr::from((dst.0, dst.1));
        if let Some(frame) = tcp_frame((src_mac, dst_mac), src, dst, seq, ack, flags, data) {
            frames.push((base + at, frame));
        }
    };
    push(Duration::ZERO, true, cseq, 0, "S", &[]);
    push(Duration::from_micros(50), false, sseq, cseq + 1, "SA", &[]);
    cseq += 1;
    sseq += 1;
    push(Duration::from_micros(100), true, cseq, sseq, "A", &[]);
    for chunk in chunks {
        let at = chunk.at.duration_since(start) + Duration::from_micros(200);
        last = last.max(at);
        if chunk.to_server {
            push(at, true, cseq, sseq, "PA", &chunk.bytes);
            cseq = cseq.wrapping_add(chunk.bytes.len() as u32);
        } else {
            push(at, false, sseq, cseq, "PA", &chunk.bytes);
            sseq = sseq.wrapping_add(chunk.bytes.len() as u32);
        }
    }
    let end = last + Duration::from_millis(1);
    push(end, true, cseq, sseq, "FA", &[]);
    push(
        end + Duration::from_micros(50),
        false,
        sseq,
        cseq + 1,
        "FA",
        &[],
    );
    push(
        end + Duration::from_micros(100),
        true,
        cseq + 1,
        sseq + 1,
        "A",
        &[],
    );
    for (ts, frame) in frames {
        writer
            .write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame))
            .map_err(std::io::Error::other)?;
    }
    Ok(())
}
