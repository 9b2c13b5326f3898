//! The engine's tables, created and upgraded by numbered migrations under a transaction-level
//! advisory lock, so replicas starting together upgrade once. A database upgraded by a newer
//! build is refused: an older replica must not write a layout it does not know.

use otwatch_kv::KvError;

use super::{CallConn, Create, db};

/// The table layout this build reads and writes.
pub const ENGINE_VERSION: i32 = 1;

/// Migration `n` takes the layout from version `n` to `n + 1`.
const MIGRATIONS: [&str; ENGINE_VERSION as usize] = [
    // 0 -> 1: one ordered table. Values stay inline up to PostgreSQL's TOAST threshold.
    "CREATE TABLE otwatch_kv (key bytea PRIMARY KEY, value bytea NOT NULL)",
];

/// The advisory lock of migrations ("otwschm" in ASCII).
const SCHEMA_LOCK: i64 = 0x006f_7477_7363_686d;

/// Checks the layout, creating or upgrading it as `create` allows.
pub(super) async fn prepare(conn: CallConn, create: Create) -> Result<(), KvError> {
    conn.batch_execute("BEGIN").await.map_err(db)?;
    conn.query_one("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(db)?;
    let exists: bool = conn
        .query_one("SELECT to_regclass('otwatch_engine') IS NOT NULL", &[])
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    let found: i32 = if exists {
        conn.query_one("SELECT version FROM otwatch_engine", &[])
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?
    } else {
        0
    };
    if found < 0 {
        conn.batch_execute("ROLLBACK").await.map_err(db)?;
        conn.done();
        return Err(KvError::Engine(format!(
            "the database's otwatch tables say version {found}, which no build wrote"
        )));
    }
    if found > ENGINE_VERSION {
        conn.batch_execute("ROLLBACK").await.map_err(db)?;
        conn.done();
        return Err(KvError::Engine(format!(
            "the database's otwatch tables are version {found}, newer than this build's {ENGINE_VERSION}: upgrade this collector"
        )));
    }
    if found == 0 && create == Create::Never {
        conn.batch_execute("ROLLBACK").await.map_err(db)?;
        conn.done();
        return Err(KvError::Engine(
            "the database has no otwatch tables: run `otwatch-collector init --store-url URL` once first"
                .into(),
        ));
    }
    if !exists {
        conn.batch_execute(
            "CREATE TABLE otwatch_engine (version integer NOT NULL); \
             INSERT INTO otwatch_engine VALUES (0)",
        )
        .await
        .map_err(db)?;
    }
    let from = usize::try_from(found).unwrap_or(0);
    for migration in MIGRATIONS.get(from..).unwrap_or_default() {
        conn.batch_execute(migration).await.map_err(db)?;
    }
    if found < ENGINE_VERSION {
        conn.execute("UPDATE otwatch_engine SET version = $1", &[&ENGINE_VERSION])
            .await
            .map_err(db)?;
        tracing::info!(
            from = found,
            to = ENGINE_VERSION,
            "database tables upgraded"
        );
    }
    conn.batch_execute("COMMIT").await.map_err(db)?;
    conn.done();
    Ok(())
}
