//! A software SPAN port: the simulator's own connections, written as a live pcap stream.
//!
//! Capturing on an interface needs root; the demo must not. So every connection a simulated
//! peer opens can be wrapped in a [`Tapped`] stream that writes what it sends and receives as
//! Ethernet/IPv4/TCP frames (handshake, segments of at most one MSS with correct sequence and
//! acknowledgement numbers, FIN at the end) to a shared pcap writer, with the real addresses
//! and the time of the write. `otwatch-agent run --pcap-stream -` reads it as it is written.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use pcap_file::PcapError;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::recorder::tcp_frame;

/// The largest TCP payload per synthesized segment.
const MSS: usize = 1460;

/// Where tapped frames go: one pcap stream for every connection.
#[derive(Clone)]
pub struct Tap {
    writer: Arc<Mutex<Option<PcapWriter<Flushing>>>>,
}

/// Flushes every write: the reader must see each frame as soon as it is written, not when a
/// buffer fills.
struct Flushing(Box<dyn Write + Send>);

impl Write for Flushing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.0.flush()?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").finish_non_exhaustive()
    }
}

impl Tap {
    /// A tap writing a classic pcap stream to `out` (a pipe, a file).
    pub fn new(out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let writer = PcapWriter::new(Flushing(out)).map_err(std::io::Error::other)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    /// Whether the reader went away (the stream could not be written); the tap is then off.
    pub fn closed(&self) -> bool {
        self.writer.lock().map_or(true, |w| w.is_none())
    }

    /// Writes a frame crafted elsewhere (an intruder's), stamped now.
    pub fn inject(&self, bytes: &[u8]) {
        self.frame(bytes);
    }

    fn frame(&self, bytes: &[u8]) {
        let Ok(mut guard) = self.writer.lock() else {
            return;
        };
        let Some(writer) = guard.as_mut() else {
            return;
        };
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if let Err(e) = writer.write_packet(&PcapPacket::new(ts, bytes.len() as u32, bytes)) {
            // Said once, as the tap goes off: a reader that went away explains missing traffic.
            // pcap-file calls every I/O error "Error reading bytes": say the system's reason.
            let reason = match e {
                PcapError::IoError(io) => io.to_string(),
                other => other.to_string(),
            };
            eprintln!("tap: writing the capture failed ({reason}); the tap is off");
            *guard = None;
        }
    }

    /// Wraps a connected stream: from now on what crosses it is written to the tap, starting
    /// with the TCP handshake.
    pub fn wrap(&self, stream: TcpStream) -> std::io::Result<Tapped> {
        let client = stream.local_addr()?;
        let server = stream.peer_addr()?;
        let mut conn = Conn {
            tap: self.clone(),
            client,
            server,
            client_seq: seed(client, server),
            server_seq: seed(server, client),
        };
        conn.handshake();
        Ok(Tapped { stream, conn })
    }
}

/// An initial sequence number that differs per connection.
fn seed(a: SocketAddr, b: SocketAddr) -> u32 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    nanos ^ u32::from(a.port()).rotate_left(16) ^ u32::from(b.port())
}

/// A MAC address derived from an IP address, so each host keeps one.
pub fn mac(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [0x02, 0x00, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [0x02, 0x00, o[12], o[13], o[14], o[15]]
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToServer,
    ToClient,
}

struct Conn {
    tap: Tap,
    client: SocketAddr,
    server: SocketAddr,
    client_seq: u32,
    server_seq: u32,
}

impl Conn {
    fn segment(&self, dir: Dir, flags: &str, payload: &[u8]) {
        let (src, dst, seq, ack) = match dir {
            Dir::ToServer => (self.client, self.server, self.client_seq, self.server_seq),
            Dir::ToClient => (self.server, self.client, self.server_seq, self.client_seq),
        };
        if let Some(frame) = tcp_frame(
            (mac(src.ip()), mac(dst.ip())),
            src,
            dst,
            seq,
            ack,
            flags,
            payload,
        ) {
            self.tap.frame(&frame);
        }
    }

    fn handshake(&mut self) {
        self.segment(Dir::ToServer, "S", &[]);
        self.client_seq = self.client_seq.wrapping_add(1);
        self.segment(Dir::ToClient, "SA", &[]);
        self.server_seq = self.server_seq.wrapping_add(1);
        self.segment(Dir::ToServer, "A", &[]);
    }

    fn data(&mut self, dir: Dir, bytes: &[u8]) {
        for chunk in bytes.chunks(MSS) {
            self.segment(dir, "PA", chunk);
            let seq = match dir {
                Dir::ToServer => &mut self.client_seq,
                Dir::ToClient => &mut self.server_seq,
            };
            *seq = seq.wrapping_add(chunk.len() as u32);
        }
    }

    fn close(&mut self) {
        self.segment(Dir::ToServer, "FA", &[]);
        self.client_seq = self.client_seq.wrapping_add(1);
        self.segment(Dir::ToClient, "FA", &[]);
        self.server_seq = self.server_seq.wrapping_add(1);
        self.segment(Dir::ToServer, "A", &[]);
    }
}

/// A TCP stream whose traffic is written to a [`Tap`]. Closing (dropping) it writes the FIN
/// exchange.
pub struct Tapped {
    stream: TcpStream,
    conn: Conn,
}

impl std::fmt::Debug for Tapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tapped")
            .field("client", &self.conn.client)
            .field("server", &self.conn.server)
            .finish()
    }
}

impl Drop for Tapped {
    fn drop(&mut self) {
        self.conn.close();
    }
}

impl AsyncRead for Tapped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let new = buf.filled().get(before..).unwrap_or_default();
            if !new.is_empty() {
                this.conn.data(Dir::ToClient, new);
            }
        }
        polled
    }
}

impl AsyncWrite for Tapped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            this.conn
                .data(Dir::ToServer, buf.get(..*n).unwrap_or_default());
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
