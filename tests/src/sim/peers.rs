//! The plant's Modbus masters, as tokio-modbus clients: HMIs that poll every PLC, and an
//! engineering workstation that adjusts setpoints now and then, within the process's limits.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout};
use tokio_modbus::client::{Client, Context, Reader, Writer};
use tokio_modbus::prelude::{Slave, tcp};

use super::tap::Tap;

/// How a peer reaches a PLC: from which local address, through the tap or not.
#[derive(Debug, Clone)]
pub struct Link {
    /// The local address to send from (a loopback alias, or an address in a namespace).
    pub bind: Option<IpAddr>,
    /// The software SPAN port, when the traffic cannot be captured.
    pub tap: Option<Tap>,
    /// The interface crafted frames are sent on raw (needs root), when there is no tap.
    pub wire: Option<String>,
}

/// Puts crafted frames on the network, one every `gap`: into the tap, or raw onto the link's
/// interface. Returns how many went out.
pub async fn inject(link: &Link, frames: Vec<Vec<u8>>, gap: Duration) -> usize {
    if gap.is_zero()
        && link.tap.is_none()
        && let Some(iface) = link.wire.clone()
    {
        // One raw socket for the whole burst.
        let count = frames.len() as u64;
        let done =
            tokio::task::spawn_blocking(move || crate::wire::send(&iface, &frames, count, 0)).await;
        return match done {
            Ok(Ok(s)) => (s.frames - s.failed) as usize,
            _ => 0,
        };
    }
    let mut sent = 0;
    for frame in frames {
        if let Some(tap) = &link.tap {
            tap.inject(&frame);
            sent += 1;
        } else if let Some(iface) = link.wire.clone() {
            let one = vec![frame];
            let done =
                tokio::task::spawn_blocking(move || crate::wire::send(&iface, &one, 1, 0)).await;
            if matches!(done, Ok(Ok(s)) if s.failed == 0) {
                sent += 1;
            }
        }
        if !gap.is_zero() {
            sleep(gap).await;
        }
    }
    sent
}

/// Waits no longer than this for a Modbus answer (a silenced PLC does not answer).
pub const ANSWER: Duration = Duration::from_secs(1);

/// Opens a TCP connection to `server` from `link.bind`.
pub async fn connect_tcp(link: &Link, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = link.bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    timeout(Duration::from_secs(3), socket.connect(server))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// A Modbus client for unit `unit` of `server`, tapped if the link says so.
pub async fn connect(link: &Link, server: SocketAddr, unit: u8) -> std::io::Result<Context> {
    let stream = connect_tcp(link, server).await?;
    let _ = stream.set_nodelay(true);
    Ok(match &link.tap {
        Some(tap) => tcp::attach_slave(tap.wrap(stream)?, Slave(unit)),
        None => tcp::attach_slave(stream, Slave(unit)),
    })
}

/// Runs `what`, giving up after [`ANSWER`]; Modbus errors and exceptions are part of the show.
pub async fn ask<T>(what: impl std::future::Future<Output = T>) -> Option<T> {
    timeout(ANSWER, what).await.ok()
}

/// What an HMI reads from each PLC every cycle: the process values, the pump's state and the
/// setpoints.
async fn poll_once(ctx: &mut Context) -> bool {
    let a = ask(ctx.read_input_registers(0, 4)).await;
    let b = ask(ctx.read_coils(0, 3)).await;
    let c = ask(ctx.read_discrete_inputs(0, 3)).await;
    let d = ask(ctx.read_holding_registers(0, 3)).await;
    [a.is_some(), b.is_some(), c.is_some(), d.is_some()]
        .iter()
        .any(|ok| *ok)
}

/// An HMI: polls every PLC every `every`, forever, reconnecting when a connection breaks.
pub async fn hmi(link: Link, plcs: Vec<SocketAddr>, every: Duration) {
    let mut contexts: Vec<Option<Context>> = plcs.iter().map(|_| None).collect();
    loop {
        for (plc, ctx) in plcs.iter().zip(contexts.iter_mut()) {
            if ctx.is_none() {
                *ctx = connect(&link, *plc, 1).await.ok();
            }
            if let Some(c) = ctx.as_mut()
                && !poll_once(c).await
            {
                *ctx = None;
            }
        }
        sleep(every).await;
    }
}

/// The engineering workstation: two seconds after start and then every `every`, connects to
/// each PLC, reads its setpoints and nudges the high setpoint within 750-850 (the process's safe
/// band), then disconnects.
pub async fn engineering(link: Link, plcs: Vec<SocketAddr>, every: Duration) {
    let mut round: u16 = 0;
    sleep(Duration::from_secs(2)).await;
    loop {
        if round > 0 {
            sleep(every).await;
        }
        round = round.wrapping_add(1);
        for plc in &plcs {
            if let Ok(mut ctx) = connect(&link, *plc, 1).await {
                let _ = ask(ctx.read_holding_registers(0, 3)).await;
                let setpoint = 750 + (round % 5) * 25;
                let _ = ask(ctx.write_single_register(0, setpoint)).await;
                let _ = ask(ctx.disconnect()).await;
            }
        }
    }
}
