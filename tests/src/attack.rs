//! A capture with attacks, made by real Modbus peers: an engineering workstation polls a PLC
//! (tokio-modbus on both sides), then turns hostile: it restarts the PLC's communications,
//! forces it into listen-only mode, fingerprints it, stops it over UMAS and writes a setpoint
//! far out of range. A recording proxy captures the exchange; [`record_attack`] writes it as
//! a pcap that a SPAN port would have produced.

use std::path::Path;
use std::time::Duration;

use tokio::time::timeout;
use tokio_modbus::prelude::*;

use crate::plc::serve_tcp;
use crate::recorder::{Endpoints, record_proxy, write_pcap};

/// The workstation's address in the capture.
pub const ATTACKER: [u8; 4] = [192, 168, 1, 10];
/// The PLC's address in the capture.
pub const PLC: [u8; 4] = [192, 168, 1, 20];

/// A policy for the capture: the workstation may read and write holding registers 0-99 with
/// values 0-5000, nothing else.
pub const POLICY: &str = r#"
version = 1

[[asset]]
name = "ews"
addresses = ["192.168.1.10"]
role = "master"
zone = "control"

[[asset]]
name = "kiln-plc"
addresses = ["192.168.1.20"]
role = "slave"
zone = "kiln"
criticality = "critical"

[[allow]]
from = "ews"
to = "kiln-plc"
functions = ["read", "write_single_register", "write_multiple_registers"]
holding_registers = "0-99"
write_values = { min = 0, max = 5000 }
"#;

/// Every step, bounded in time: a PLC that stops answering must not hang the test.
async fn step<T>(what: impl std::future::Future<Output = T>) {
    let _ = timeout(Duration::from_secs(5), what).await;
}

/// Plays the attack against a fresh PLC and writes the capture to `path`.
pub async fn record_attack(path: &Path) -> std::io::Result<()> {
    record(path, true).await
}

/// Plays only the normal polling (what the policy allows) and writes the capture to `path`.
pub async fn record_polling(path: &Path) -> std::io::Result<()> {
    record(path, false).await
}

/// Normal polling on another segment: `client` reads holding registers `first`..`first + 9`
/// of `server` five times and writes register `first + 10`, as [`record_polling`] does on the
/// attack's segment.
pub async fn record_segment(
    path: &Path,
    client: [u8; 4],
    server: [u8; 4],
    first: u16,
) -> std::io::Result<()> {
    record_between(
        path,
        false,
        Endpoints {
            client: (client, 50_000),
            server: (server, 502),
        },
        first,
    )
    .await
}

async fn record(path: &Path, hostile: bool) -> std::io::Result<()> {
    let endpoints = Endpoints {
        client: (ATTACKER, 50_000),
        server: (PLC, 502),
    };
    record_between(path, hostile, endpoints, 0).await
}

async fn record_between(
    path: &Path,
    hostile: bool,
    endpoints: Endpoints,
    first: u16,
) -> std::io::Result<()> {
    let server = serve_tcp().await?;
    let (proxy, recording) = record_proxy(server).await?;
    let mut ctx = tcp::connect_slave(proxy, Slave(1)).await?;
    for _ in 0..5 {
        step(ctx.read_holding_registers(first, 10)).await;
    }
    step(ctx.write_single_register(first + 10, 1200)).await;
    if hostile {
        attack(&mut ctx).await;
    }
    let _ = ctx.disconnect().await;
    drop(ctx);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let chunks = recording
        .lock()
        .map_err(|_| std::io::Error::other("recording poisoned"))?
        .clone();
    write_pcap(path, &chunks, endpoints)
}

async fn attack(ctx: &mut client::Context) {
    // Restart Communications Option, then Force Listen Only Mode (function 8).
    step(ctx.call(Request::Custom(0x08, vec![0x00, 0x01, 0x00, 0x00].into()))).await;
    step(ctx.call(Request::Custom(0x08, vec![0x00, 0x04, 0x00, 0x00].into()))).await;
    // Read Device Identification (43/14), basic objects.
    step(ctx.call(Request::Custom(0x2B, vec![0x0E, 0x01, 0x00].into()))).await;
    // Schneider UMAS: stop the PLC.
    step(ctx.call(Request::Custom(0x5A, vec![0x00, 0x41].into()))).await;
    // A setpoint far beyond what the process allows, and a write outside the allowed range.
    step(ctx.write_single_register(20, 60_000)).await;
    step(ctx.write_multiple_registers(500, &[1, 2, 3])).await;
}
