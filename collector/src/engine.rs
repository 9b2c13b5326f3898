//! The storage engine the configuration chooses: sled in the data folder (one collector), or
//! PostgreSQL (replicas sharing one database). One type for both, so the server is built once.

use std::ops::Bound;
use std::path::Path;

use otwatch_kv::sled::SledKv;
use otwatch_kv::{Batch, EngineStats, Entry, Kv, KvError, Order, Section};
use otwatch_kv_postgres::{Create, Options, PgKv};

use crate::config::{Backend, StoreSettings};

/// An engine of either kind.
#[derive(Debug)]
pub enum Engine {
    /// sled, embedded.
    Sled(SledKv),
    /// PostgreSQL, shared.
    Postgres(PgKv),
}

/// Why the engine could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The settings are inconsistent.
    #[error("{0}")]
    Settings(String),
    /// The database refused, or a setting was not usable.
    #[error(transparent)]
    Postgres(#[from] otwatch_kv_postgres::OpenError),
    /// sled could not open its folder.
    #[error(transparent)]
    Kv(#[from] KvError),
}

impl Engine {
    /// Opens the engine `settings` choose: sled in `data/store`, or the database (whose tables
    /// are created only with [`Create::IfMissing`], by `init`).
    pub fn open(
        settings: &StoreSettings,
        data: &Path,
        create: Create,
    ) -> Result<Self, EngineError> {
        match settings.backend().map_err(EngineError::Settings)? {
            Backend::Sled => Ok(Self::Sled(SledKv::open(&data.join("store"))?)),
            Backend::Postgres => {
                let url = settings.url.clone().unwrap_or_default();
                let mut options = Options::new(url);
                options.password_file = settings.password_file.clone();
                options.ca_file = settings.ca_file.clone();
                if let Some(size) = settings.pool_size {
                    options.pool_size = size;
                }
                let kv = PgKv::open(&options, create)?;
                tracing::info!(database = kv.target(), "store on PostgreSQL");
                Ok(Self::Postgres(kv))
            }
        }
    }

    /// The PostgreSQL engine, for its metrics.
    pub fn postgres(&self) -> Option<&PgKv> {
        match self {
            Self::Postgres(kv) => Some(kv),
            Self::Sled(_) => None,
        }
    }
}

impl Kv for Engine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        match self {
            Self::Sled(kv) => kv.get(key),
            Self::Postgres(kv) => kv.get(key),
        }
    }

    fn apply(&self, batch: Batch) -> Result<(), KvError> {
        match self {
            Self::Sled(kv) => kv.apply(batch),
            Self::Postgres(kv) => kv.apply(batch),
        }
    }

    fn flush(&self) -> Result<(), KvError> {
        match self {
            Self::Sled(kv) => kv.flush(),
            Self::Postgres(kv) => kv.flush(),
        }
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
        match self {
            Self::Sled(kv) => kv.range(start, end, order, limit),
            Self::Postgres(kv) => kv.range(start, end, order, limit),
        }
    }

    fn size_on_disk(&self) -> Result<u64, KvError> {
        match self {
            Self::Sled(kv) => kv.size_on_disk(),
            Self::Postgres(kv) => kv.size_on_disk(),
        }
    }

    fn live_bytes(&self) -> Result<u64, KvError> {
        match self {
            Self::Sled(kv) => kv.live_bytes(),
            Self::Postgres(kv) => kv.live_bytes(),
        }
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        match self {
            Self::Sled(kv) => kv.get_many(keys),
            Self::Postgres(kv) => kv.get_many(keys),
        }
    }

    fn section(&self) -> Result<Section<'_>, KvError> {
        match self {
            Self::Sled(kv) => kv.section(),
            Self::Postgres(kv) => kv.section(),
        }
    }

    fn stats(&self) -> Option<EngineStats> {
        match self {
            Self::Sled(kv) => kv.stats(),
            Self::Postgres(kv) => kv.stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use otwatch_kv_postgres::throwaway::Cluster;

    use super::*;

    #[test]
    fn the_database_is_reached_over_tls_with_its_authority_and_refused_without_it() {
        let Some(cluster) = Cluster::for_test("the_database_is_reached_over_tls") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        // A certificate authority and a server certificate for 127.0.0.1, as `init` makes them.
        let server = crate::pki::create(dir.path(), &["127.0.0.1".to_string()]).unwrap();
        cluster.enable_tls(&server.cert, &server.key).unwrap();
        cluster.create_database("tls").unwrap();
        let options = cluster.options("tls");
        let settings = StoreSettings {
            url: Some(options.url.clone()),
            password_file: options.password_file.clone(),
            ca_file: Some(server.ca.clone()),
            ..StoreSettings::default()
        };
        let engine = Engine::open(&settings, dir.path(), Create::IfMissing).unwrap();
        let mut b = Batch::new();
        b.put(b"k".to_vec(), b"v".to_vec());
        engine.apply(b).unwrap();
        let over_tls = cluster
            .query(
                "tls",
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'otwatch-collector' AND s.ssl",
            )
            .unwrap();
        assert_ne!(over_tls, "0", "the engine's connections use TLS");
        drop(engine);

        // An authority that did not sign the server's certificate: refused, saying why.
        let other = tempfile::tempdir().unwrap();
        let stranger = crate::pki::create(other.path(), &["127.0.0.1".to_string()]).unwrap();
        let settings = StoreSettings {
            ca_file: Some(stranger.ca),
            ..settings
        };
        let err = Engine::open(&settings, dir.path(), Create::Never)
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificate"), "{err}");
        // And sslmode=require without an authority is refused before connecting.
        let settings = StoreSettings {
            url: Some(format!("{}?sslmode=require", options.url)),
            ca_file: None,
            ..settings
        };
        let err = Engine::open(&settings, dir.path(), Create::Never)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslmode=require needs store.ca_file"), "{err}");
    }
}
