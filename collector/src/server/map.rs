//! `GET /api/v1/map`: the plant's Modbus conversations as a graph for the dashboard's network
//! map. Nodes are hosts (assets, hosts of conversations, hosts only alerts name), each with
//! its zone and the worst open incident it is part of; edges are conversations (master to
//! slave) with their request rate and functions, and the host pairs of open incidents that no
//! conversation covers (a scan, a rogue master whose requests went unanswered).
//!
//! Bounded: the busiest [`MAX_EDGES`] conversations and at most [`MAX_NODES`] hosts;
//! `truncated` says when something was left out. A built map is reused for [`FRESH`]. "Open"
//! incidents here are those not resolved: open or acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use otwatch_rules::alert::Severity;
use otwatch_rules::time::Timestamp;
use serde::Serialize;

use super::{ApiError, Shared, authorize, blocking};
use crate::kv::Kv;
use crate::store::conversation::{self, ConversationRecord};
use crate::store::model::{AssetRecord, Incident, IncidentState};
use crate::store::{Action, StoreError};

/// Most edges the map draws: the busiest conversations, then incident pairs.
pub const MAX_EDGES: usize = 5_000;
/// Most hosts the map draws.
pub const MAX_NODES: usize = 2_000;
/// How long a built map is reused: a wall of dashboards redrawing as alerts arrive costs one
/// build every few seconds, not one per page.
pub const FRESH: Duration = Duration::from_secs(5);
/// Incidents and assets read (the posture's bounds).
const INCIDENTS_READ: usize = 10_000;
const ASSETS_READ: usize = 100_000;

/// A host on the map.
#[derive(Debug, Serialize)]
struct Node {
    ip: IpAddr,
    /// The policy's name for it, if an agent's policy names it.
    name: Option<String>,
    /// The policy's zone.
    zone: Option<String>,
    master: bool,
    slave: bool,
    vendor: Option<String>,
    /// An agent reported it as an asset.
    in_inventory: bool,
    /// No conversation and no inventory: only alerts name it.
    only_in_alerts: bool,
    /// The worst open or acknowledged incident it is part of.
    worst: Option<Severity>,
}

/// A conversation, or an incident's host pair, on the map.
#[derive(Debug, Serialize)]
struct Edge {
    /// `conversation`, or `incident` for a pair only incidents name.
    kind: &'static str,
    master: IpAddr,
    slave: IpAddr,
    /// Requests per second in the newest window (0 for an incident pair).
    rate: f64,
    requests: u64,
    functions: Vec<u8>,
    last_seen: Option<Timestamp>,
    /// The worst open or acknowledged incident between the two, either way.
    worst: Option<Severity>,
    /// Open or acknowledged incidents between the two.
    incidents: u64,
}

/// The graph, built off the async workers.
#[derive(Debug, Serialize)]
struct Map {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    truncated: bool,
    /// Reports of new conversations the store did not keep (it holds at most
    /// `store::conversation::MAX_CONVERSATIONS`).
    conversations_dropped: u64,
}

/// The unordered pair of two hosts.
fn pair(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    (a.min(b), a.max(b))
}

fn build(
    mut conversations: Vec<ConversationRecord>,
    incidents: &[Incident],
    assets: &[AssetRecord],
    dropped: u64,
) -> Map {
    let live: Vec<&Incident> = incidents
        .iter()
        .filter(|i| i.state != IncidentState::Resolved)
        .collect();
    // The worst incident and the count per host pair, and the worst per host.
    let mut by_pair: BTreeMap<(IpAddr, IpAddr), (Severity, u64, IpAddr, IpAddr)> = BTreeMap::new();
    let mut by_host: HashMap<IpAddr, Severity> = HashMap::new();
    for i in &live {
        let e = by_pair
            .entry(pair(i.src_ip, i.dst_ip))
            .or_insert((i.severity, 0, i.src_ip, i.dst_ip));
        e.0 = e.0.max(i.severity);
        e.1 += 1;
        for h in [i.src_ip, i.dst_ip] {
            let w = by_host.entry(h).or_insert(i.severity);
            *w = (*w).max(i.severity);
        }
    }
    conversations.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(b.requests.cmp(&a.requests)));
    let mut truncated = conversations.len() > MAX_EDGES;
    conversations.truncate(MAX_EDGES);
    let mut edges: Vec<Edge> = Vec::new();
    let mut covered = HashSet::new();
    for c in &conversations {
        let p = pair(c.master, c.slave);
        covered.insert(p);
        let (worst, count) = by_pair.get(&p).map_or((None, 0), |e| (Some(e.0), e.1));
        edges.push(Edge {
            kind: "conversation",
            master: c.master,
            slave: c.slave,
            rate: c.rate,
            requests: c.requests,
            functions: c.functions.clone(),
            last_seen: Some(c.last_seen),
            worst,
            incidents: count,
        });
    }
    for (p, (worst, count, src, dst)) in &by_pair {
        if covered.contains(p) {
            continue;
        }
        if edges.len() >= MAX_EDGES {
            truncated = true;
            break;
        }
        edges.push(Edge {
            kind: "incident",
            master: *src,
            slave: *dst,
            rate: 0.0,
            requests: 0,
            functions: Vec::new(),
            last_seen: None,
            worst: Some(*worst),
            incidents: *count,
        });
    }
    let inventory: HashMap<IpAddr, &AssetRecord> = assets.iter().map(|a| (a.asset.ip, a)).collect();
    let masters: HashSet<IpAddr> = conversations.iter().map(|c| c.master).collect();
    let slaves: HashSet<IpAddr> = conversations.iter().map(|c| c.slave).collect();
    // Hosts of edges first (an edge needs both ends), then the rest of the inventory.
    let mut order: Vec<IpAddr> = Vec::new();
    let mut placed = HashSet::new();
    for ip in edges
        .iter()
        .flat_map(|e| [e.master, e.slave])
        .chain(assets.iter().map(|a| a.asset.ip))
    {
        if placed.insert(ip) {
            order.push(ip);
        }
    }
    if order.len() > MAX_NODES {
        truncated = true;
        order.truncate(MAX_NODES);
        let kept: HashSet<IpAddr> = order.iter().copied().collect();
        edges.retain(|e| kept.contains(&e.master) && kept.contains(&e.slave));
    }
    let nodes = order
        .into_iter()
        .map(|ip| {
            let known = inventory.get(&ip).map(|a| &a.asset);
            Node {
                ip,
                name: known.and_then(|a| a.name.clone()),
                zone: known.and_then(|a| a.zone.clone()),
                master: known.is_some_and(|a| a.master) || masters.contains(&ip),
                slave: known.is_some_and(|a| a.slave) || slaves.contains(&ip),
                vendor: known.and_then(|a| a.vendor.clone()),
                in_inventory: known.is_some(),
                only_in_alerts: known.is_none() && !masters.contains(&ip) && !slaves.contains(&ip),
                worst: by_host.get(&ip).copied(),
            }
        })
        .collect();
    Map {
        nodes,
        edges,
        truncated,
        conversations_dropped: dropped,
    }
}

/// The route.
pub(super) async fn map<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let cached = || {
        state
            .map_cache
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .filter(|(at, _)| at.elapsed() < FRESH)
    };
    if let Some((_, map)) = cached() {
        return Ok(json_response(map));
    }
    // One build at a time; who waited for it takes what it built.
    let _building = state.map_build.lock().await;
    if let Some((_, map)) = cached() {
        return Ok(json_response(map));
    }
    let store = state.store.clone();
    let map = blocking(move || {
        let conversations = store.conversations(conversation::MAX_CONVERSATIONS as usize)?;
        let incidents = store.incidents(None, INCIDENTS_READ)?;
        let assets = store.assets(ASSETS_READ)?;
        let dropped = store.conversations_dropped()?;
        let map = build(conversations, &incidents, &assets, dropped);
        serde_json::to_vec(&map).map_err(|e| StoreError::Corrupt(e.to_string()))
    })
    .await?;
    let map = Bytes::from(map);
    if let Ok(mut c) = state.map_cache.lock() {
        *c = Some((Instant::now(), map.clone()));
    }
    Ok(json_response(map))
}

fn json_response(body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body)
}
