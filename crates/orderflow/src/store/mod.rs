//! Durable state: orders, items, history, timers, the change feed, effects, clients and the
//! list projection, in SQLite (embedded default) or PostgreSQL.
//!
//! Both backends share one SQL dialect where they can (`$1` placeholders work in both), and
//! the shared statements are written once and run on either driver ([`on_tx`],
//! [`on_reader`]). What differs lives in one place per backend: [`sqlite`] and [`postgres`]
//! each hold their connection setup, their [`Dialect`] (the statement texts that differ)
//! and the few functions whose shape differs (multi-row writes: `VALUES` lists on SQLite,
//! `UNNEST` arrays on PostgreSQL), with the same signatures on both sides.
//!
//! Every write to an order happens in one [`Tx`] that holds the order exclusively: on
//! PostgreSQL a row lock (`SELECT ... FOR NO KEY UPDATE`: exclusive among writers, yet it
//! does not block inserts of rows that reference the order, such as the list projection's),
//! on SQLite the single writer connection, whose transactions start with `BEGIN IMMEDIATE`
//! so SQLite never reports `SQLITE_BUSY` halfway through a transaction.
//!
//! Wake-ups ([`Store::wakeups`]) tell the inbox worker that updates may be due and waiters
//! that an update settled: raised by a [`Tx`] and delivered after its commit, in this
//! process and (PostgreSQL `NOTIFY`) in every other process on the same database.

pub mod batch;
pub mod clients;
mod dialect;
pub mod effects;
pub mod feed;
pub mod group;
pub mod inbox;
pub mod json;
mod names;
pub mod orders;
mod postgres;
pub mod projection;
pub mod sessions;
mod sqlite;
pub mod status;
pub mod subscriptions;
pub mod timers;
mod transit;
mod wake;

use std::sync::Arc;

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Sqlite, Transaction};

pub(crate) use dialect::{Dialect, List};
pub use names::TimerKind;
pub use wake::{Settled, Wakeups};

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
    Database(sqlx::Error),
    /// An error of the SQLite connection the ERP inbox's group writer owns.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Deciding an update panicked inside the transaction (a bug in the engine or in a
    /// plugin's command or condition): the transaction is rolled back, as on a database
    /// error, and the updates are tried again one at a time.
    #[error("processing panicked: {0}")]
    Panicked(String),
    /// A SQLite worker's batch was paused between recording itself and taking the writer
    /// back for longer than `worker.lease`: another process took it for ended and applied
    /// its updates. This one applies nothing.
    #[error(
        "another worker took this batch's updates over: it paused for longer than worker.lease"
    )]
    TakenOver,
}

/// A stored value this build cannot read (an unknown status, timer kind or role) is
/// corrupt data, never a database failure nor a default.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                Self::Corrupt(e.to_string())
            }
            e => Self::Database(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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

/// The lines of a query plan read with the dialect's `explain`: the last column of each row
/// on both backends.
fn plan_lines<R: sqlx::Row>(rows: &[R]) -> std::result::Result<Vec<String>, sqlx::Error>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    rows.iter().map(|r| r.try_get(r.len() - 1)).collect()
}

/// True when `e` is a unique-constraint violation, on either backend.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

pub use sqlite::SqliteStore;

/// The connection pools of one backend.
#[derive(Clone, Debug)]
pub(crate) enum Pools {
    Sqlite(SqliteStore),
    Postgres(PgPool),
}

/// A connected store. Cheap to clone: the pools and the wake-ups are shared.
#[derive(Clone, Debug)]
pub struct Store {
    pools: Pools,
    wake: Arc<Wakeups>,
}

/// The connection of an open transaction.
pub(crate) enum Conn {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// An open write transaction. Dropping it without [`Tx::commit`] rolls back, and the
/// wake-ups it raised are dropped with it.
pub struct Tx {
    conn: Conn,
    wake: Arc<Wakeups>,
    raised: wake::Raised,
}

/// Runs `$body` with `$c` bound to the transaction's connection, once per backend: the SQL
/// and binds are written once and type-checked against both drivers.
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match &mut ($tx).conn {
            $crate::store::Conn::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::store::Conn::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

/// Runs `$body` with `$p` bound to a pool for reads (SQLite: the reader pool).
macro_rules! on_reader {
    ($store:expr, |$p:ident| $body:expr) => {
        match &($store).pools {
            $crate::store::Pools::Sqlite(s) => {
                let $p = s.reader();
                $body
            }
            $crate::store::Pools::Postgres($p) => $body,
        }
    };
}

/// Calls the function `$f` of the transaction's backend module ([`sqlite`] or
/// [`postgres`]), its connection first: the one place that picks a backend's own code.
macro_rules! per_backend {
    ($tx:expr, $f:ident($($arg:expr),*)) => {
        match &mut ($tx).conn {
            $crate::store::Conn::Sqlite(t) => $crate::store::sqlite::$f(&mut **t, $($arg),*).await,
            $crate::store::Conn::Postgres(t) => {
                $crate::store::postgres::$f(&mut **t, $($arg),*).await
            }
        }
    };
}

pub(crate) use {on_reader, on_tx, per_backend};

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
        let (pools, listen) = match Backend::of_url(url)? {
            Backend::Sqlite => (Pools::Sqlite(sqlite::connect(url).await?), None),
            Backend::Postgres => {
                let pool = postgres::connect(url).await?;
                (Pools::Postgres(pool.clone()), Some(pool))
            }
        };
        Ok(Self {
            pools,
            wake: Arc::new(Wakeups::new(listen)),
        })
    }

    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        match &self.pools {
            Pools::Sqlite(_) => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    /// The statement texts of this store's backend.
    pub(crate) fn dialect(&self) -> &'static Dialect {
        match &self.pools {
            Pools::Sqlite(_) => &sqlite::DIALECT,
            Pools::Postgres(_) => &postgres::DIALECT,
        }
    }

    /// The PostgreSQL pool, for tools and tests that run their own SQL; `None` on SQLite.
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.pools {
            Pools::Postgres(p) => Some(p),
            Pools::Sqlite(_) => None,
        }
    }

    /// Wake-ups: inbox updates that may be due, updates that settled. Wait on them instead
    /// of polling; on PostgreSQL they also carry what other processes committed.
    pub fn wakeups(&self) -> &Arc<Wakeups> {
        &self.wake
    }

    fn migrator(&self) -> &'static Migrator {
        match &self.pools {
            Pools::Sqlite(_) => &sqlite::MIGRATIONS,
            Pools::Postgres(_) => &postgres::MIGRATIONS,
        }
    }

    /// Applies the migrations this build knows and the database has not seen yet.
    pub async fn migrate(&self) -> Result<()> {
        match &self.pools {
            Pools::Sqlite(s) => self.migrator().run(s.writer()).await?,
            Pools::Postgres(p) => self.migrator().run(p).await?,
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
        self.begin_as(None).await
    }

    /// [`Store::begin`] with `begin` sent as the `BEGIN`: statements that set the
    /// transaction up go with it, in one round trip (a dialect's text; `None`: the
    /// backend's plain one).
    pub(crate) async fn begin_as(&self, begin: Option<&'static str>) -> Result<Tx> {
        let conn = match (&self.pools, begin) {
            (Pools::Sqlite(s), begin) => {
                Conn::Sqlite(s.begin_with(begin.unwrap_or(sqlite::BEGIN)).await?)
            }
            (Pools::Postgres(p), None) => Conn::Postgres(p.begin().await?),
            (Pools::Postgres(p), Some(sql)) => Conn::Postgres(p.begin_with(sql).await?),
        };
        Ok(Tx {
            conn,
            wake: self.wake.clone(),
            raised: wake::Raised::default(),
        })
    }

    pub async fn close(&self) {
        self.wake.close();
        match &self.pools {
            Pools::Sqlite(s) => s.close().await,
            Pools::Postgres(p) => p.close().await,
        }
    }
}

impl Tx {
    /// The statement texts of this transaction's backend.
    pub(crate) fn dialect(&self) -> &'static Dialect {
        match &self.conn {
            Conn::Sqlite(_) => &sqlite::DIALECT,
            Conn::Postgres(_) => &postgres::DIALECT,
        }
    }

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
        self.execute_script(sql).await
    }

    /// Runs statements without parameters in this transaction (schema changes in tests and
    /// tools; the text is the caller's, so pick it by [`Store::backend`]).
    pub async fn execute_script(&mut self, sql: impl sqlx::SqlSafeStr + Send) -> Result<()> {
        let sql = sql.into_sql_str();
        on_tx!(self, |c| sqlx::raw_sql(sql.clone())
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Commits, then delivers the wake-ups the transaction raised (PostgreSQL: its
    /// `NOTIFY`s are sent with the commit, to every process).
    pub async fn commit(self) -> Result<()> {
        let Self { conn, wake, raised } = self;
        match conn {
            Conn::Sqlite(t) => t.commit().await?,
            Conn::Postgres(mut t) => {
                if !raised.is_empty() {
                    postgres::notify(&mut t, &raised).await?;
                }
                t.commit().await?;
            }
        }
        wake.deliver(&raised);
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
