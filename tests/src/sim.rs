//! A simulated plant on real Modbus stacks (tokio-modbus): tank PLCs whose registers follow a
//! living process, an HMI polling them, an engineering workstation adjusting setpoints, and an
//! attack script. It runs on loopback aliases (127.0.x.y, no root needed; traffic reaches the
//! agent through the [`tap`], a software SPAN port) or across network namespaces, where the
//! agent captures it on a real interface.

pub mod attack;
pub mod crafted;
pub mod peers;
pub mod plc;
pub mod tank;
pub mod tap;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use peers::Link;
use plc::ProcessPlc;
use tap::Tap;

/// The plant's policy (`deploy/policies/simulated-plant.toml`): what the HMI and the engineering
/// workstation may do, for both layouts.
pub const POLICY: &str = include_str!("../../deploy/policies/simulated-plant.toml");

/// Where every part of the plant sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The PLCs' listening addresses (port 0: any free port).
    pub plcs: Vec<SocketAddr>,
    /// The HMI's address.
    pub hmi: IpAddr,
    /// The engineering workstation's address.
    pub engineering: IpAddr,
    /// The intruder's address (not in the policy).
    pub intruder: IpAddr,
    /// The interface the intruder sends crafted frames on raw, where there is one (in the
    /// namespace layout, the captured veth end; needs root).
    pub wire: Option<String>,
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

impl Layout {
    /// On loopback aliases, which Linux answers for the whole of 127.0.0.0/8: no root, no setup.
    pub fn loopback() -> Self {
        Self {
            plcs: vec![
                SocketAddr::new(v4(127, 0, 10, 1), 0),
                SocketAddr::new(v4(127, 0, 10, 2), 0),
            ],
            hmi: v4(127, 0, 20, 1),
            engineering: v4(127, 0, 30, 1),
            intruder: v4(127, 0, 66, 6),
            wire: None,
        }
    }

    /// In 10.66.0.0/24: PLCs on .2 and .3 port 502, HMI .10, workstation .11, intruder .66.
    pub fn namespaces() -> Self {
        Self {
            plcs: vec![
                SocketAddr::new(v4(10, 66, 0, 2), 502),
                SocketAddr::new(v4(10, 66, 0, 3), 502),
            ],
            hmi: v4(10, 66, 0, 10),
            engineering: v4(10, 66, 0, 11),
            intruder: v4(10, 66, 0, 66),
            wire: None,
        }
    }

    /// The link a master at `ip` uses.
    pub fn link(&self, ip: IpAddr, tap: Option<&Tap>) -> Link {
        Link {
            bind: Some(ip),
            tap: tap.cloned(),
            wire: self.wire.clone(),
        }
    }
}

/// Starts a PLC on each address of `listen`; returns the bound addresses.
pub async fn start_plcs(listen: &[SocketAddr]) -> std::io::Result<Vec<SocketAddr>> {
    let mut bound = Vec::new();
    for (i, addr) in listen.iter().enumerate() {
        let product = if i == 0 { "SIM-TANK-1" } else { "SIM-TANK-2" };
        bound.push(plc::serve(*addr, Arc::new(ProcessPlc::new(1, product))).await?);
    }
    Ok(bound)
}

/// How the normal traffic runs.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Between two HMI polling rounds.
    pub hmi: Duration,
    /// Between two setpoint adjustments.
    pub engineering: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            hmi: Duration::from_secs(1),
            engineering: Duration::from_secs(15),
        }
    }
}

/// Starts the HMI and the engineering workstation against `plcs`, for as long as the runtime
/// runs.
pub fn start_masters(layout: &Layout, plcs: &[SocketAddr], tap: Option<&Tap>, pace: Pace) {
    tokio::spawn(peers::hmi(
        layout.link(layout.hmi, tap),
        plcs.to_vec(),
        pace.hmi,
    ));
    tokio::spawn(peers::engineering(
        layout.link(layout.engineering, tap),
        plcs.to_vec(),
        pace.engineering,
    ));
}

/// Plays the attack script once against the first PLC.
pub async fn attack_once(
    layout: &Layout,
    plcs: &[SocketAddr],
    tap: Option<&Tap>,
    say: &(dyn Fn(&attack::Step) + Sync),
) {
    if let Some(plc) = plcs.first() {
        attack::attack(
            &layout.link(layout.intruder, tap),
            &layout.link(layout.engineering, tap),
            *plc,
            layout.hmi,
            say,
        )
        .await;
    }
}

/// Crashes the first PLC with the crafted write of [`attack::crash`] and waits until it
/// answers again.
pub async fn crash_once(
    layout: &Layout,
    plcs: &[SocketAddr],
    tap: Option<&Tap>,
    say: &(dyn Fn(&attack::Step) + Sync),
) {
    if let Some(plc) = plcs.first() {
        attack::crash(&layout.link(layout.intruder, tap), *plc, say).await;
    }
}
