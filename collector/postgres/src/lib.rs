//! [`Kv`] on PostgreSQL, for collector replicas that share one database.
//!
//! One table, `otwatch_kv (key bytea primary key, value bytea)`: PostgreSQL compares `bytea`
//! byte by byte, shorter first on a tie, which is exactly the order the trait promises, so a
//! range scan is one index scan. A batch is one transaction (the last write of a key in a batch
//! wins, as in the model); it is durable once committed, so [`Kv::flush`] has nothing left to
//! do (with `synchronous_standby_names` set on the server, committed means on two servers).
//!
//! Writer sections ([`Kv::section`]) take a session advisory lock on a connection kept for the
//! section, and every read and batch of the thread that holds the section goes through that
//! connection. If the connection is lost the server drops the lock, and the section's later
//! calls fail rather than write without it: no two replicas ever interleave a
//! read-modify-write.
//!
//! The trait is synchronous (the store is called from blocking threads); the engine runs the
//! driver (tokio-postgres with a deadpool pool) on a small runtime of its own and waits for
//! each call, so it may be called from any thread, inside another runtime or not.
//!
//! Connection: a libpq URL, multi-host (`postgresql://otwatch@db1,db2/otwatch?
//! target_session_attrs=read-write` finds whichever is primary after a failover), TLS through
//! rustls when a CA is given, the password from a file ([`passfile`]), never from the URL.

pub mod passfile;
mod schema;
#[cfg(feature = "throwaway")]
pub mod throwaway;

use std::future::Future;
use std::ops::Bound;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use otwatch_kv::{Batch, EngineStats, Entry, Kv, KvError, Op, Order, Section};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::ToSql;

pub use schema::ENGINE_VERSION;

/// How long one call may take before it fails (a database that stopped answering must not
/// stall an ingest forever: the agent retries elsewhere).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How long to wait for a connection from the pool, or for a new one to be made.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The advisory lock key of writer sections ("otwatch" in ASCII).
const SECTION_LOCK: i64 = 0x006f_7477_6174_6368;

/// How to reach the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// libpq URL, without a password.
    pub url: String,
    /// A file holding the password alone, or `None` for `PGPASSFILE` (or `~/.pgpass`).
    pub password_file: Option<PathBuf>,
    /// PEM certificates of the authority that signed the database's certificate: TLS is used
    /// (and required, whatever the URL's `sslmode`) when set.
    pub ca_file: Option<PathBuf>,
    /// Most connections the pool holds.
    pub pool_size: usize,
}

impl Options {
    /// Options for `url` with the default pool and no TLS.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password_file: None,
            ca_file: None,
            pool_size: 16,
        }
    }
}

/// Whether opening may create the schema in an empty database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// `init`: create it when the database has none.
    IfMissing,
    /// `serve` and the other commands: refuse a database `init` never prepared.
    Never,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL or a setting is not usable; names the setting and what was expected.
    #[error("{field}: {message}")]
    Invalid {
        /// The setting at fault.
        field: &'static str,
        /// What was wrong and what was expected.
        message: String,
    },
    /// The database refused or could not be reached.
    #[error(transparent)]
    Kv(#[from] KvError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> OpenError {
    OpenError::Invalid {
        field,
        message: message.into(),
    }
}

/// Counters behind [`Kv::stats`].
#[derive(Debug, Default)]
struct Stats {
    /// Calls made.
    calls: AtomicU64,
    /// Calls that failed (the database refused, was unreachable or too slow).
    errors: AtomicU64,
    /// Time spent in calls, in microseconds.
    micros: AtomicU64,
}

/// A pool's occupancy, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open.
    pub size: usize,
    /// Connections open and idle.
    pub available: usize,
    /// Most connections the pool opens.
    pub max_size: usize,
}

/// The engine (see the module documentation).
pub struct PgKv {
    /// Always `Some` until dropped (shut down in the background: dropping a runtime inside
    /// another runtime's thread panics).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// The sections held, by the thread holding each (one per thread: a store and the
    /// credentials of one process may each hold one, one after the other across replicas).
    sections: Mutex<Vec<Held>>,
    stats: Stats,
    target: String,
}

/// The connection of the writer section a thread holds.
struct Held {
    thread: ThreadId,
    conn: Arc<Object>,
    broken: Arc<AtomicBool>,
}

impl std::fmt::Debug for PgKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKv")
            .field("target", &self.target)
            .finish()
    }
}

impl PgKv {
    /// Connects, checks (or, with [`Create::IfMissing`], creates) the schema and returns the
    /// engine. A database whose schema is newer than this build's is refused.
    pub fn open(options: &Options, create: Create) -> Result<Self, OpenError> {
        let mut config = tokio_postgres::Config::from_str(&options.url)
            .map_err(|e| invalid("store url", format!("{e} (expected a libpq URL such as postgresql://otwatch@db1:5432,db2:5432/otwatch?target_session_attrs=read-write)")))?;
        if config.get_password().is_some() {
            return Err(invalid(
                "store url",
                "carries a password; put it in a password file (store.password_file, or PGPASSFILE) so it shows in no command line or configuration",
            ));
        }
        let Some(user) = config.get_user().map(str::to_owned) else {
            return Err(invalid(
                "store url",
                "names no user (expected postgresql://USER@HOST/DATABASE)",
            ));
        };
        if config.get_hosts().is_empty() {
            return Err(invalid("store url", "names no host"));
        }
        let dbname = config.get_dbname().unwrap_or(&user).to_owned();
        let password =
            match &options.password_file {
                Some(path) => Some(passfile::read_password_file(path).map_err(|e| {
                    invalid("store password_file", format!("{}: {e}", path.display()))
                })?),
                None => passfile::lookup_default(&config, &dbname, &user)
                    .map_err(|e| invalid("PGPASSFILE", e))?,
            };
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        // The server must notice a replica that vanished (power, network) as fast as the
        // replica notices the server: a dead replica's writer section (a session lock) is held
        // until the server drops its connection, about two hours by the kernel's defaults.
        let server_side = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 \
                           -c tcp_keepalives_count=3 -c tcp_user_timeout=60000";
        let startup = match config.get_options() {
            Some(given) => format!("{given} {server_side}"),
            None => server_side.to_string(),
        };
        config.options(&startup);
        if config.get_application_name().is_none() {
            config.application_name("otwatch-collector");
        }
        let target = describe(&config, &dbname);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &options.ca_file {
            Some(path) => {
                if config.get_ssl_mode() == SslMode::Disable {
                    return Err(invalid(
                        "store url",
                        "sslmode=disable contradicts store.ca_file (remove one of them)",
                    ));
                }
                config.ssl_mode(SslMode::Require);
                let tls = tls(path).map_err(|e| invalid("store ca_file", e))?;
                Manager::from_config(config, tls, manager_config)
            }
            None => {
                if config.get_ssl_mode() == SslMode::Require {
                    return Err(invalid(
                        "store url",
                        "sslmode=require needs store.ca_file (the authority that signed the database's certificate)",
                    ));
                }
                Manager::from_config(config, tokio_postgres::NoTls, manager_config)
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("otwatch-postgres")
            .enable_all()
            .build()
            .map_err(|e| KvError::Engine(format!("postgres runtime: {e}")))?;
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| KvError::Engine(format!("postgres pool: {e}")))?;
        let kv = Self {
            runtime: Some(runtime),
            pool,
            sections: Mutex::new(Vec::new()),
            stats: Stats::default(),
            target,
        };
        let pool = kv.pool.clone();
        kv.block(async move {
            let conn = lease(&pool).await?;
            schema::prepare(conn, create).await
        })?;
        Ok(kv)
    }

    /// Where the engine connects ("postgresql://otwatch@db1:5432,db2:5432/otwatch"), without
    /// secrets, for logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The pool's occupancy, for metrics.
    pub fn pool_status(&self) -> PoolStatus {
        let s = self.pool.status();
        PoolStatus {
            size: s.size,
            available: s.available,
            max_size: s.max_size,
        }
    }

    /// Whether the database answers a trivial query now (readiness).
    pub fn ping(&self) -> Result<(), KvError> {
        let via = self.via();
        self.call(async move {
            let conn = via.lease().await?;
            conn.simple_query("SELECT 1").await.map_err(db)?;
            Ok(())
        })
    }

    /// Runs `work` on the engine's runtime and waits for it, failing it past [`CALL_TIMEOUT`].
    fn block<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, KvError>> + Send + 'static,
    ) -> Result<T, KvError> {
        let Some(runtime) = &self.runtime else {
            return Err(KvError::Engine("postgres: engine closed".into()));
        };
        let task = runtime.spawn(async move { tokio::time::timeout(CALL_TIMEOUT, work).await });
        match futures::executor::block_on(task) {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(KvError::Engine(format!(
                "postgres: no answer within {CALL_TIMEOUT:?}"
            ))),
            Err(e) => Err(KvError::Engine(format!("postgres: call failed: {e}"))),
        }
    }

    /// [`PgKv::block`], counted in [`Stats`].
    fn call<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, KvError>> + Send + 'static,
    ) -> Result<T, KvError> {
        let started = Instant::now();
        let result = self.block(work);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if result.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// The connection this thread's calls go through: its section's, or one from the pool.
    fn via(&self) -> Via {
        let here = std::thread::current().id();
        if let Ok(sections) = self.sections.lock()
            && let Some(held) = sections.iter().find(|h| h.thread == here)
        {
            return Via::Held(Arc::clone(&held.conn), Arc::clone(&held.broken));
        }
        Via::Pool(self.pool.clone())
    }

    /// Ends this thread's section: unlocks and returns the connection to the pool, or closes
    /// the connection (which drops the lock too) if anything went wrong on it.
    fn end_section(&self) {
        let here = std::thread::current().id();
        let held = match self.sections.lock() {
            Ok(mut sections) => sections
                .iter()
                .position(|h| h.thread == here)
                .map(|at| sections.swap_remove(at)),
            Err(_) => None,
        };
        let Some(held) = held else { return };
        let Ok(conn) = Arc::try_unwrap(held.conn) else {
            // A call still holds it (cannot happen: calls are synchronous); the lock stays
            // until that call's connection closes.
            return;
        };
        // Closed (dropping the lock with it) unless unlocked cleanly: a connection that may
        // still hold the lock never goes back to the pool.
        let conn = CallConn {
            conn: Some(Conn::Pooled(Box::new(conn))),
            clean: false,
        };
        if held.broken.load(Ordering::Relaxed) {
            return;
        }
        let unlocked = self.block(async move {
            let done = conn
                .query_one("SELECT pg_advisory_unlock($1)", &[&SECTION_LOCK])
                .await
                .map(|row| row.try_get::<_, bool>(0));
            match done {
                Ok(Ok(true)) => {
                    conn.done();
                    Ok(())
                }
                other => Err(KvError::Engine(format!(
                    "postgres: writer section not released cleanly ({other:?}); its connection was closed"
                ))),
            }
        });
        if let Err(e) = unlocked {
            tracing::warn!(error = %e, "closing a writer section's connection");
        }
    }
}

impl Drop for PgKv {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Where a call's connection comes from.
enum Via {
    Pool(Pool),
    Held(Arc<Object>, Arc<AtomicBool>),
}

impl Via {
    async fn lease(self) -> Result<CallConn, KvError> {
        match self {
            Via::Pool(pool) => lease(&pool).await,
            // A section whose connection failed once stays failed: its later calls must not
            // run as if the lock were still held.
            Via::Held(_, broken) if broken.load(Ordering::Relaxed) => Err(KvError::Engine(
                "postgres: the writer section's connection failed; the section is over".into(),
            )),
            Via::Held(conn, broken) => Ok(CallConn {
                conn: Some(Conn::Held(conn, broken)),
                clean: false,
            }),
        }
    }
}

enum Conn {
    Pooled(Box<Object>),
    Held(Arc<Object>, Arc<AtomicBool>),
}

/// A connection for one call. Unless the call marks it clean, it is closed (a pooled one) or
/// its section is marked broken (a held one) when dropped: a call cut short in the middle of a
/// transaction never leaves that transaction to the next user.
struct CallConn {
    conn: Option<Conn>,
    clean: bool,
}

impl CallConn {
    fn done(mut self) {
        self.clean = true;
    }
}

impl std::ops::Deref for CallConn {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &tokio_postgres::Client {
        match &self.conn {
            Some(Conn::Pooled(o)) => o,
            Some(Conn::Held(o, _)) => o,
            None => unreachable!("a call's connection is taken only when it drops"),
        }
    }
}

impl Drop for CallConn {
    fn drop(&mut self) {
        if self.clean {
            return;
        }
        match self.conn.take() {
            Some(Conn::Pooled(o)) => drop(Object::take(*o)),
            Some(Conn::Held(_, broken)) => broken.store(true, Ordering::Relaxed),
            None => {}
        }
    }
}

async fn lease(pool: &Pool) -> Result<CallConn, KvError> {
    let conn = pool
        .get()
        .await
        .map_err(|e| KvError::Engine(format!("postgres: no connection: {}", explain(&e))))?;
    Ok(CallConn {
        conn: Some(Conn::Pooled(Box::new(conn))),
        clean: false,
    })
}

/// A row's key and value.
fn entry(row: &tokio_postgres::Row) -> Result<Entry, KvError> {
    Ok((
        row.try_get::<_, Vec<u8>>(0).map_err(db)?,
        row.try_get::<_, Vec<u8>>(1).map_err(db)?,
    ))
}

fn db(e: tokio_postgres::Error) -> KvError {
    KvError::Engine(format!("postgres: {}", explain(&e)))
}

/// The driver's error with what the server said or what failed underneath (its `Display` alone
/// says only "db error").
fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

impl Kv for PgKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let via = self.via();
        let key = key.to_vec();
        self.call(async move {
            let conn = via.lease().await?;
            let row = conn
                .query_opt("SELECT value FROM otwatch_kv WHERE key = $1", &[&key])
                .await
                .map_err(db)?;
            conn.done();
            row.map(|r| r.try_get::<_, Vec<u8>>(0).map_err(db))
                .transpose()
        })
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let via = self.via();
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        self.call(async move {
            let conn = via.lease().await?;
            let rows = conn
                .query(
                    "SELECT key, value FROM otwatch_kv WHERE key = ANY($1)",
                    &[&keys],
                )
                .await
                .map_err(db)?;
            conn.done();
            let found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
                rows.iter().map(entry).collect::<Result<_, _>>()?;
            // A key asked twice is answered twice.
            Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
        })
    }

    fn apply(&self, batch: Batch) -> Result<(), KvError> {
        if batch.is_empty() {
            return Ok(());
        }
        // The last operation on a key decides it, so one DELETE and one INSERT do the batch.
        let mut last: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
        for op in batch.ops() {
            match op {
                Op::Put(k, v) => last.insert(k.clone(), Some(v.clone())),
                Op::Delete(k) => last.insert(k.clone(), None),
            };
        }
        let mut removed = Vec::new();
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for (k, v) in last {
            match v {
                Some(v) => {
                    keys.push(k);
                    values.push(v);
                }
                None => removed.push(k),
            }
        }
        let via = self.via();
        self.call(async move {
            let conn = via.lease().await?;
            // One statement, so one round trip and atomic by itself: the removals and the
            // writes touch different keys (the last operation on each key decided it).
            conn.execute(
                "WITH removed AS (DELETE FROM otwatch_kv WHERE key = ANY($1)) \
                 INSERT INTO otwatch_kv (key, value) SELECT * FROM unnest($2::bytea[], $3::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&removed, &keys, &values],
            )
            .await
            .map_err(db)?;
            conn.done();
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), KvError> {
        // Every batch was committed before `apply` returned.
        Ok(())
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut sql = String::from("SELECT key, value FROM otwatch_kv");
        let mut params: Vec<Vec<u8>> = Vec::new();
        let clause = |op: &str, key: &[u8], params: &mut Vec<Vec<u8>>, sql: &mut String| {
            params.push(key.to_vec());
            sql.push_str(if params.len() == 1 {
                " WHERE "
            } else {
                " AND "
            });
            sql.push_str(&format!("key {op} ${}", params.len()));
        };
        match start {
            Bound::Included(k) => clause(">=", k, &mut params, &mut sql),
            Bound::Excluded(k) => clause(">", k, &mut params, &mut sql),
            Bound::Unbounded => {}
        }
        match end {
            Bound::Included(k) => clause("<=", k, &mut params, &mut sql),
            Bound::Excluded(k) => clause("<", k, &mut params, &mut sql),
            Bound::Unbounded => {}
        }
        sql.push_str(match order {
            Order::Ascending => " ORDER BY key ASC",
            Order::Descending => " ORDER BY key DESC",
        });
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        sql.push_str(&format!(" LIMIT ${}", params.len() + 1));
        let via = self.via();
        self.call(async move {
            let conn = via.lease().await?;
            let mut refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            refs.push(&limit);
            let rows = conn.query(sql.as_str(), &refs).await.map_err(db)?;
            conn.done();
            rows.iter().map(entry).collect()
        })
    }

    fn size_on_disk(&self) -> Result<u64, KvError> {
        let via = self.via();
        self.call(async move {
            let conn = via.lease().await?;
            let row = conn
                .query_one("SELECT pg_total_relation_size('otwatch_kv')", &[])
                .await
                .map_err(db)?;
            conn.done();
            Ok(u64::try_from(row.try_get::<_, i64>(0).map_err(db)?).unwrap_or(0))
        })
    }

    fn live_bytes(&self) -> Result<u64, KvError> {
        // The table's files do not shrink when rows are removed (vacuum keeps the space for
        // new rows), so retention measures the rows kept: all of them in a small table, a 1 %
        // sample of its pages, scaled, in a large one.
        let via = self.via();
        self.call(async move {
            let conn = via.lease().await?;
            let row = conn
                .query_one(
                    "SELECT CASE WHEN pg_relation_size('otwatch_kv') < 134217728 \
                       THEN (SELECT coalesce(sum(pg_column_size(t.*)), 0)::bigint FROM otwatch_kv t) \
                       ELSE (SELECT coalesce(sum(pg_column_size(t.*)), 0)::bigint * 100 \
                             FROM otwatch_kv t TABLESAMPLE SYSTEM (1)) END",
                    &[],
                )
                .await
                .map_err(db)?;
            conn.done();
            Ok(u64::try_from(row.try_get::<_, i64>(0).map_err(db)?).unwrap_or(0))
        })
    }

    fn stats(&self) -> Option<EngineStats> {
        let pool = self.pool_status();
        Some(EngineStats {
            calls: self.stats.calls.load(Ordering::Relaxed),
            errors: self.stats.errors.load(Ordering::Relaxed),
            busy_micros: self.stats.micros.load(Ordering::Relaxed),
            pool_in_use: pool.size.saturating_sub(pool.available) as u64,
            pool_idle: pool.available as u64,
            pool_max: pool.max_size as u64,
        })
    }

    fn section(&self) -> Result<Section<'_>, KvError> {
        let here = std::thread::current().id();
        if self
            .sections
            .lock()
            .map_err(|_| KvError::Engine("postgres: section state poisoned".into()))?
            .iter()
            .any(|h| h.thread == here)
        {
            return Err(KvError::Engine(
                "postgres: this thread already holds a writer section (sections do not nest)"
                    .into(),
            ));
        }
        let pool = self.pool.clone();
        let conn = self.call(async move {
            let mut lease = lease(&pool).await?;
            lease
                .query_one("SELECT pg_advisory_lock($1)", &[&SECTION_LOCK])
                .await
                .map_err(db)?;
            match lease.conn.take() {
                Some(Conn::Pooled(o)) => Ok(*o),
                _ => Err(KvError::Engine(
                    "postgres: section without a connection".into(),
                )),
            }
        })?;
        let held = Held {
            thread: std::thread::current().id(),
            conn: Arc::new(conn),
            broken: Arc::new(AtomicBool::new(false)),
        };
        match self.sections.lock() {
            Ok(mut sections) => sections.push(held),
            Err(_) => return Err(KvError::Engine("postgres: section state poisoned".into())),
        }
        Ok(Section::ending_with(move || self.end_section()))
    }
}

/// The URL without secrets, for logs.
fn describe(config: &tokio_postgres::Config, dbname: &str) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    format!(
        "postgresql://{}@{}/{dbname}",
        config.get_user().unwrap_or(""),
        hosts.join(",")
    )
}

/// A TLS connector trusting the authorities in the PEM file at `path`.
fn tls(path: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{}: holds no certificate (expected PEM)",
            path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(all(test, feature = "throwaway"))]
mod tests;
