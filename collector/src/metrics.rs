//! The collector's Prometheus metrics, all prefixed `otwatch_collector_`.

use prometheus::{
    Counter, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the collector exports.
pub struct Metrics {
    registry: Registry,
    /// Alerts stored for the first time.
    pub ingested: IntCounter,
    /// Alerts received again (retries).
    pub duplicates: IntCounter,
    /// Alerts by severity and rule.
    pub alerts: IntCounterVec,
    /// Agents heard from within the offline threshold.
    pub agents_online: IntGauge,
    /// Open incidents.
    pub incidents_open: IntGauge,
    /// Store size on disk.
    pub store_bytes: IntGauge,
    /// Alerts stored.
    pub store_alerts: IntGauge,
    /// Requests refused, by reason.
    pub refused: IntCounterVec,
    /// API latency by route.
    pub latency: HistogramVec,
    /// Alerts the exporters could not forward, by exporter and reason.
    pub export_lost: IntCounterVec,
    /// Exporter sends that failed and are tried again, by exporter.
    pub export_retries: IntCounterVec,
    /// Alerts stored and not yet exported, by exporter.
    pub export_behind: IntGaugeVec,
    /// 1 on the replica that exports, by exporter.
    pub export_leader: IntGaugeVec,
    /// Connections open.
    pub connections_open: IntGauge,
    /// Idle connections closed to make room for a new one.
    pub connections_evicted: IntCounter,
    /// Asset list entries dropped because a list was full (read from the store's counter).
    pub asset_entries_dropped: IntCounter,
    /// When the server certificate served ends (Unix seconds; absent over plain HTTP).
    pub certificate_not_after: IntGauge,
    /// When the certificate authority agents trust ends (Unix seconds).
    pub ca_not_after: IntGauge,
    /// Whether the store answered when last asked (1) or not (0): a replica without its
    /// database.
    pub store_ready: IntGauge,
    /// Calls to a database store (absent on sled).
    pub store_calls: IntCounter,
    /// Calls to a database store that failed.
    pub store_errors: IntCounter,
    /// Time spent in calls to a database store.
    pub store_call_seconds: Counter,
    /// A database store's connections, by state (in_use, idle, max).
    pub store_connections: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help));
        let gauge = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help));
        let m = Self {
            ingested: counter(
                "otwatch_collector_alerts_ingested_total",
                "Alerts stored for the first time",
            )?,
            duplicates: counter(
                "otwatch_collector_alerts_duplicate_total",
                "Alerts received again (retried deliveries), not stored twice",
            )?,
            alerts: IntCounterVec::new(
                Opts::new(
                    "otwatch_collector_alerts_total",
                    "Alerts stored, by severity and rule",
                ),
                &["severity", "rule"],
            )?,
            agents_online: gauge(
                "otwatch_collector_agents_online",
                "Agents heard from recently",
            )?,
            incidents_open: gauge("otwatch_collector_incidents_open", "Open incidents")?,
            store_bytes: gauge("otwatch_collector_store_bytes", "Store size on disk")?,
            store_alerts: gauge("otwatch_collector_store_alerts", "Alerts stored")?,
            refused: IntCounterVec::new(
                Opts::new(
                    "otwatch_collector_requests_refused_total",
                    "Requests refused, by reason",
                ),
                &["reason"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "otwatch_collector_api_latency_seconds",
                    "API request latency by route",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["route"],
            )?,
            export_lost: IntCounterVec::new(
                Opts::new(
                    "otwatch_collector_export_lost_total",
                    "Alerts an exporter lost for good, by exporter and reason (failed: a UDP datagram the system refused)",
                ),
                &["exporter", "reason"],
            )?,
            export_retries: IntCounterVec::new(
                Opts::new(
                    "otwatch_collector_export_retries_total",
                    "Exporter sends that failed (receiver down, file not writable) and are tried again from the same alert",
                ),
                &["exporter"],
            )?,
            export_behind: IntGaugeVec::new(
                Opts::new(
                    "otwatch_collector_export_behind",
                    "Alerts stored and not yet exported, by exporter (reported by the replica exporting)",
                ),
                &["exporter"],
            )?,
            export_leader: IntGaugeVec::new(
                Opts::new(
                    "otwatch_collector_export_leader",
                    "1 on the replica that holds the exporter's lease and exports, 0 elsewhere",
                ),
                &["exporter"],
            )?,
            connections_open: gauge("otwatch_collector_connections_open", "Connections open")?,
            connections_evicted: counter(
                "otwatch_collector_connections_evicted_total",
                "Idle connections closed to make room for a new one (all connections were in use)",
            )?,
            asset_entries_dropped: counter(
                "otwatch_collector_asset_entries_dropped_total",
                "Entries of asset lists (MACs, units, functions, peers, reporting agents) dropped because the list was full",
            )?,
            certificate_not_after: gauge(
                "otwatch_collector_certificate_not_after_timestamp_seconds",
                "When the server certificate being served expires (Unix time); rotate it with otwatch-collector rotate-cert",
            )?,
            ca_not_after: gauge(
                "otwatch_collector_ca_not_after_timestamp_seconds",
                "When the certificate authority agents trust (ca.pem) expires (Unix time)",
            )?,
            store_ready: gauge(
                "otwatch_collector_store_ready",
                "1 when the store answered the last scrape or readiness probe, 0 when not (a replica without its database refuses ingest with 503)",
            )?,
            store_calls: counter(
                "otwatch_collector_store_calls_total",
                "Calls to the database store (PostgreSQL backend only)",
            )?,
            store_errors: counter(
                "otwatch_collector_store_errors_total",
                "Calls to the database store that failed: refused, unreachable or slower than 15 s",
            )?,
            store_call_seconds: Counter::with_opts(Opts::new(
                "otwatch_collector_store_call_seconds_total",
                "Time spent in calls to the database store (divide by calls for the mean latency)",
            ))?,
            store_connections: IntGaugeVec::new(
                Opts::new(
                    "otwatch_collector_store_connections",
                    "Connections to the database store, by state: in_use, idle, max",
                ),
                &["state"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.ingested.clone()))?;
        m.registry.register(Box::new(m.duplicates.clone()))?;
        m.registry.register(Box::new(m.alerts.clone()))?;
        m.registry.register(Box::new(m.agents_online.clone()))?;
        m.registry.register(Box::new(m.incidents_open.clone()))?;
        m.registry.register(Box::new(m.store_bytes.clone()))?;
        m.registry.register(Box::new(m.store_alerts.clone()))?;
        m.registry.register(Box::new(m.refused.clone()))?;
        m.registry.register(Box::new(m.latency.clone()))?;
        m.registry.register(Box::new(m.export_lost.clone()))?;
        m.registry.register(Box::new(m.export_retries.clone()))?;
        m.registry.register(Box::new(m.export_behind.clone()))?;
        m.registry.register(Box::new(m.export_leader.clone()))?;
        m.registry.register(Box::new(m.connections_open.clone()))?;
        m.registry
            .register(Box::new(m.connections_evicted.clone()))?;
        m.registry
            .register(Box::new(m.asset_entries_dropped.clone()))?;
        m.registry
            .register(Box::new(m.certificate_not_after.clone()))?;
        m.registry.register(Box::new(m.ca_not_after.clone()))?;
        m.registry.register(Box::new(m.store_ready.clone()))?;
        m.registry.register(Box::new(m.store_calls.clone()))?;
        m.registry.register(Box::new(m.store_errors.clone()))?;
        m.registry
            .register(Box::new(m.store_call_seconds.clone()))?;
        m.registry.register(Box::new(m.store_connections.clone()))?;
        Ok(m)
    }

    /// How exporters run on this replica: `holder` names it in the store's leases.
    pub fn exporting(&self, holder: String) -> crate::export::Exporting {
        crate::export::Exporting {
            holder,
            lease: crate::export::LEASE,
            page: 500,
            lost: self.export_lost.clone(),
            retries: self.export_retries.clone(),
            behind: self.export_behind.clone(),
            leader: self.export_leader.clone(),
        }
    }

    /// Follows a database engine's totals (counters only ever rise) and its pool.
    pub fn follow_engine(&self, stats: otwatch_kv::EngineStats) {
        self.store_calls
            .inc_by(stats.calls.saturating_sub(self.store_calls.get()));
        self.store_errors
            .inc_by(stats.errors.saturating_sub(self.store_errors.get()));
        let seconds = stats.busy_micros as f64 / 1e6;
        let grown = seconds - self.store_call_seconds.get();
        if grown > 0.0 {
            self.store_call_seconds.inc_by(grown);
        }
        for (state, n) in [
            ("in_use", stats.pool_in_use),
            ("idle", stats.pool_idle),
            ("max", stats.pool_max),
        ] {
            self.store_connections
                .with_label_values(&[state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
