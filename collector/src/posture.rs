//! The plant's security posture: which agents are alive, which incidents are open, and how
//! risky each asset and zone is, with the factors that make up each score.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use otwatch_rules::alert::Severity;
use otwatch_rules::time::Timestamp;
use serde::Serialize;

use crate::store::model::{AgentRecord, AssetRecord, Incident, IncidentState};

/// One contribution to a score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Factor {
    /// What it is.
    pub factor: String,
    /// Points it adds (before the criticality multiplier).
    pub points: f64,
}

/// An asset's risk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssetRisk {
    /// The host.
    pub ip: IpAddr,
    /// Its policy name, if an agent knew it.
    pub name: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
    /// 0-100.
    pub score: f64,
    /// What makes up the score.
    pub factors: Vec<Factor>,
}

/// A zone's risk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneRisk {
    /// The zone (`unzoned` for assets without one).
    pub zone: String,
    /// 0-100.
    pub score: f64,
    /// What makes up the score.
    pub factors: Vec<Factor>,
}

/// An agent and whether it is alive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentStatus {
    /// Everything the agent last reported.
    #[serde(flatten)]
    pub record: AgentRecord,
    /// Heard from within the offline threshold.
    pub online: bool,
}

/// The whole picture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Posture {
    /// Agents online.
    pub agents_online: usize,
    /// Agents offline.
    pub agents_offline: usize,
    /// Open incidents by severity.
    pub open_incidents: BTreeMap<Severity, u64>,
    /// Acknowledged (not yet resolved) incidents.
    pub acknowledged_incidents: u64,
    /// Assets, riskiest first.
    pub assets: Vec<AssetRisk>,
    /// Zones, riskiest first.
    pub zones: Vec<ZoneRisk>,
}

/// Points an incident adds to the assets it involves.
fn weight(severity: Severity) -> f64 {
    match severity {
        Severity::Info => 1.0,
        Severity::Low => 3.0,
        Severity::Medium => 8.0,
        Severity::High => 20.0,
        Severity::Critical => 40.0,
    }
}

fn multiplier(criticality: Option<&str>) -> f64 {
    match criticality {
        Some("low") => 0.5,
        Some("high") => 1.5,
        Some("critical") => 2.0,
        _ => 1.0,
    }
}

/// Agents with their liveness at `now`.
pub fn agent_status(
    agents: Vec<AgentRecord>,
    now: Timestamp,
    offline_after: Duration,
) -> Vec<AgentStatus> {
    agents
        .into_iter()
        .map(|record| AgentStatus {
            online: now.since(record.seen_at) <= offline_after,
            record,
        })
        .collect()
}

/// Computes the posture.
pub fn posture(agents: &[AgentStatus], incidents: &[Incident], assets: &[AssetRecord]) -> Posture {
    let mut open_incidents: BTreeMap<Severity, u64> = BTreeMap::new();
    let mut acknowledged = 0;
    let mut factors: BTreeMap<IpAddr, Vec<Factor>> = BTreeMap::new();
    for i in incidents {
        let share = match i.state {
            IncidentState::Open => {
                *open_incidents.entry(i.severity).or_default() += 1;
                1.0
            }
            IncidentState::Acknowledged => {
                acknowledged += 1;
                0.5
            }
            IncidentState::Resolved => continue,
        };
        let state = if share < 1.0 { "acknowledged" } else { "open" };
        for (ip, role) in [(i.dst_ip, "target"), (i.src_ip, "source")] {
            // A flood from many sources names the unspecified address, no host; an address
            // both source and target of its incident (ARP spoofing) counts it once.
            if ip.is_unspecified() || (role == "source" && ip == i.dst_ip) {
                continue;
            }
            factors.entry(ip).or_default().push(Factor {
                factor: format!(
                    "{state} {} incident #{} ({}) as {role}",
                    i.severity, i.id, i.rule
                ),
                points: weight(i.severity) * share,
            });
        }
    }
    let mut risks: Vec<AssetRisk> = assets
        .iter()
        .map(|a| {
            let mut f = factors.remove(&a.asset.ip).unwrap_or_default();
            let peers = a.asset.peers.len();
            if peers > 0 {
                f.push(Factor {
                    factor: format!("talks Modbus with {peers} hosts"),
                    points: (peers as f64).min(10.0),
                });
            }
            // The highest criticality any agent reported: no agent lowers another's.
            let criticality = a.highest_criticality().or(a.asset.criticality.as_deref());
            risk(
                a.asset.ip,
                a.asset.name.clone(),
                a.asset.zone.clone(),
                criticality,
                f,
            )
        })
        .collect();
    // Hosts in incidents that no agent reported as an asset still count.
    for (ip, f) in factors {
        risks.push(risk(ip, None, None, None, f));
    }
    risks.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.ip.cmp(&b.ip)));
    let mut zones: BTreeMap<String, Vec<&AssetRisk>> = BTreeMap::new();
    for r in &risks {
        zones
            .entry(r.zone.clone().unwrap_or_else(|| "unzoned".into()))
            .or_default()
            .push(r);
    }
    let mut zones: Vec<ZoneRisk> = zones
        .into_iter()
        .map(|(zone, members)| {
            let riskiest = members.first().map_or(0.0, |r| r.score);
            let exposed = members.iter().filter(|r| r.score > 0.0).count();
            let mut factors = Vec::new();
            if let Some(top) = members.first() {
                factors.push(Factor {
                    factor: format!("riskiest asset {} scores {:.0}", top.ip, top.score),
                    points: riskiest,
                });
            }
            let spread = (exposed.saturating_sub(1) as f64 * 2.0).min(20.0);
            if spread > 0.0 {
                factors.push(Factor {
                    factor: format!("{exposed} assets at risk"),
                    points: spread,
                });
            }
            ZoneRisk {
                zone,
                score: (riskiest + spread).min(100.0),
                factors,
            }
        })
        .collect();
    zones.sort_by(|a, b| b.score.total_cmp(&a.score));
    Posture {
        agents_online: agents.iter().filter(|a| a.online).count(),
        agents_offline: agents.iter().filter(|a| !a.online).count(),
        open_incidents,
        acknowledged_incidents: acknowledged,
        assets: risks,
        zones,
    }
}

/// Maps points (0 to unbounded) onto 0-100 without a hard ceiling, so a critical asset under
/// many incidents still ranks above a less critical one under the same incidents: 50 points
/// score 39, 100 score 63, 200 score 86. One decimal.
fn saturate(points: f64) -> f64 {
    let score = 100.0 * (1.0 - (-points.max(0.0) / 100.0).exp());
    (score * 10.0).round() / 10.0
}

fn risk(
    ip: IpAddr,
    name: Option<String>,
    zone: Option<String>,
    criticality: Option<&str>,
    mut factors: Vec<Factor>,
) -> AssetRisk {
    let m = multiplier(criticality);
    if m != 1.0 {
        factors.push(Factor {
            factor: format!(
                "criticality {} multiplies by {m}",
                criticality.unwrap_or("")
            ),
            points: 0.0,
        });
    }
    let base: f64 = factors.iter().map(|f| f.points).sum();
    AssetRisk {
        ip,
        name,
        zone,
        score: saturate(base * m),
        factors,
    }
}

#[cfg(test)]
mod tests;
