//! Durable state: orders, items, history, timers, the change feed, effects, clients and the
//! list projection, in SQLite (embedded default) or PostgreSQL.
//!
//! Both backends share one SQL dialect where they can (`$1` placeholders work in both); the
//! [`Store`] and [`Tx`] enums pick the connection and the few statements that differ. Every
//! write to an order happens in one [`Tx`] that holds the order exclusively: on PostgreSQL a
//! row lock (`SELECT ... FOR NO KEY UPDATE`: exclusive among writers, yet it does not block
//! inserts of rows that reference the order, such as the list projection's), on SQLite the
//! single writer connection, whose transactions start with `BEGIN IMMEDIATE` so SQLite never
//! reports `SQLITE_BUSY` halfway through a transaction.

pub mod batch;
pub mod clients;
pub mod group;
pub mod inbox;
pub mod json;
pub mod orders;
pub mod projection;
pub mod status;
pub mod timers;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("order reference {0:?} is already used")]
    ReferenceTaken(String),
    #[error("a client named {0:?} already exists (--reissue gives it a new token)")]
    ClientNameTaken(String),
    #[error("client {name:?} has role {role}; --reissue keeps a client's role")]
    ClientRoleDiffers { name: String, role: String },
    #[error("unsupported database URL scheme {0:?}: use sqlite://FILE or postgres://...")]
    UnsupportedUrl(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The database cannot be reached or opened: one sentence that says which and why.
    #[error("{0}")]
    Connect(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How long a first connection to PostgreSQL may take at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong, in the words of the database or the operating system, once.
fn cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            _ => io.to_string(),
        },
        other => other.to_string(),
    }
}

/// True when `e` is a unique-constraint violation, on either backend.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// The two SQLite pools: one writer connection (all writes are serialised through it, which
/// is what SQLite does anyway, minus the busy errors) and a pool of readers (WAL lets them
/// read while the writer writes).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

/// A connected store. Cheap to clone: the pools are shared.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgPool),
}

/// An open write transaction. Dropping it without [`Tx::commit`] rolls back.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$c` bound to the transaction's connection, once per backend: the SQL
/// and binds are written once and type-checked against both drivers.
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            $crate::store::Tx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::store::Tx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

/// Runs `$body` with `$p` bound to a pool for reads (SQLite: the reader pool).
macro_rules! on_reader {
    ($store:expr, |$p:ident| $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite(s) => {
                let $p = &s.reader;
                $body
            }
            $crate::store::Store::Postgres($p) => $body,
        }
    };
}

pub(crate) use {on_reader, on_tx};

/// What kind of database a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            other => Err(StoreError::UnsupportedUrl(other.to_owned())),
        }
    }
}

impl Store {
    /// Connects without migrating. A SQLite file is created if missing.
    pub async fn connect(url: &str) -> Result<Self> {
        match Backend::of_url(url)? {
            Backend::Sqlite => {
                // synchronous=FULL: a write we acknowledged survives power loss. WAL with
                // NORMAL could lose the last commits; throughput comes from group commit
                // in the inbox, never from weaker durability.
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true);
                // No ping before each use: a connection to a local file does not go stale,
                // and the ping is a round trip to the connection's thread on every write.
                // Checkpoint (copy the WAL into the database file, and fsync it) every
                // 10,000 pages (40 MB) rather than SQLite's 1,000: a batch of updates
                // dirties hundreds of scattered pages, and the same order and index pages
                // again in later batches; a checkpoint writes each page once however often
                // it changed since the last one. Commits still fsync the WAL.
                let writer_options = options.clone().pragma("wal_autocheckpoint", "10000");
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(writer_options)
                    .await
                    .map_err(|e| {
                        StoreError::Connect(format!(
                            "cannot open the SQLite database {}: {} (does its folder exist and \
                             may this user write there?)",
                            options.get_filename().display(),
                            cause(&e)
                        ))
                    })?;
                let reader = SqlitePoolOptions::new()
                    .max_connections(4)
                    .test_before_acquire(false)
                    .connect_with(options.read_only(true))
                    .await?;
                Ok(Self::Sqlite(SqliteStore { writer, reader }))
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)?;
                // One direct attempt first: the pool would retry until its acquire timeout
                // and then say only "pool timed out", not why.
                let at = format!("{}:{}", options.get_host(), options.get_port());
                let probe = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
                )
                .await;
                match probe {
                    Ok(Ok(c)) => {
                        let _ = sqlx::Connection::close(c).await;
                    }
                    Ok(Err(e)) => {
                        return Err(StoreError::Connect(format!(
                            "cannot connect to PostgreSQL at {at}: {}",
                            cause(&e)
                        )));
                    }
                    Err(_) => {
                        return Err(StoreError::Connect(format!(
                            "cannot connect to PostgreSQL at {at}: no answer within {} s",
                            CONNECT_TIMEOUT.as_secs()
                        )));
                    }
                }
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await?;
                Ok(Self::Postgres(pool))
            }
        }
    }

    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self {
            Self::Sqlite(_) => &SQLITE_MIGRATIONS,
            Self::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies the migrations this build knows and the database has not seen yet.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Self::Sqlite(s) => SQLITE_MIGRATIONS.run(&s.writer).await?,
            Self::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    /// True when the database answers and every migration of this build is applied.
    pub async fn ready(&self) -> Result<bool> {
        let want = self.migrator().iter().map(|m| m.version).max().unwrap_or(0);
        let sql = "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success";
        let have: i64 = on_reader!(self, |p| sqlx::query_scalar(sql).fetch_one(p).await)?;
        Ok(have >= want)
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match self {
            Self::Sqlite(s) => Tx::Sqlite(s.writer.begin_with("BEGIN IMMEDIATE").await?),
            Self::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => {
                s.reader.close().await;
                s.writer.close().await;
            }
            Self::Postgres(p) => p.close().await,
        }
    }
}

impl Tx {
    /// Marks a point [`Tx::rollback_to_savepoint`] returns to (one level: the inbox's
    /// per-update savepoint inside a batch transaction).
    pub async fn savepoint(&mut self) -> Result<()> {
        self.execute_raw("SAVEPOINT inbox_update").await
    }

    pub async fn release_savepoint(&mut self) -> Result<()> {
        self.execute_raw("RELEASE SAVEPOINT inbox_update").await
    }

    /// Undoes everything since [`Tx::savepoint`]; the transaction is usable again after a
    /// failed statement (PostgreSQL aborts the whole transaction otherwise).
    pub async fn rollback_to_savepoint(&mut self) -> Result<()> {
        self.execute_raw("ROLLBACK TO SAVEPOINT inbox_update").await
    }

    async fn execute_raw(&mut self, sql: &'static str) -> Result<()> {
        on_tx!(self, |c| sqlx::raw_sql(sql).execute(c).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            Self::Sqlite(t) => t.commit().await?,
            Self::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// Now, truncated to microseconds: what both backends store, so a value read back equals
/// the value written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta, Utc};
    let t = Utc::now();
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}
