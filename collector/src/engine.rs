//! The storage engine the configuration chooses: sled in the data folder (one collector), or
//! PostgreSQL (replicas sharing one database), behind the storage trait, so the server is built
//! once for both.

use std::path::Path;
use std::sync::Arc;

use otwatch_kv::sled::SledKv;
use otwatch_kv::{Kv, KvError};
use otwatch_kv_postgres::{Create, Options, PgKv};

use crate::config::{Backend, StoreSettings};

/// An engine of either kind.
pub type Engine = Arc<dyn Kv>;

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

/// Opens the engine `settings` choose: sled in `data/store`, or the database (whose tables are
/// created only with [`Create::IfMissing`], by `init`).
pub fn open(settings: &StoreSettings, data: &Path, create: Create) -> Result<Engine, EngineError> {
    match settings.backend().map_err(EngineError::Settings)? {
        Backend::Sled => Ok(Arc::new(SledKv::open(&data.join("store"))?)),
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
            Ok(Arc::new(kv))
        }
    }
}

#[cfg(test)]
mod tests {
    use otwatch_kv_postgres::throwaway::Cluster;

    use otwatch_kv::Batch;

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
        let engine = open(&settings, dir.path(), Create::IfMissing).unwrap();
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
        let err = open(&settings, dir.path(), Create::Never)
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificate"), "{err}");
        // And sslmode=require without an authority is refused before connecting.
        let settings = StoreSettings {
            url: Some(format!("{}?sslmode=require", options.url)),
            ca_file: None,
            ..settings
        };
        let err = open(&settings, dir.path(), Create::Never)
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslmode=require needs store.ca_file"), "{err}");
    }
}
