//! Group-committed inserts of new inbox updates: the store side of the inbox's writer.
//!
//! A group is stored in one transaction and acknowledged after its commit. On SQLite that
//! commit syncs the WAL (`synchronous = FULL`), so the cost of a group is one fsync plus
//! what it takes to reach SQLite; this module keeps that small:
//! - on SQLite the group's statements run synchronously on the group writer's own thread
//!   and connection (`sqlite::GroupConn`; sqlx would hand each statement and each returned
//!   row to the connection's thread and back), while [`GroupWriter`] holds the pool's one
//!   writer connection as its permit to write, from one group to the next while groups
//!   follow each other (at most `HOLD_GROUPS` in a row, then other writers get their turn);
//! - placeholders are positional (`?`): SQLite finds a numbered one (`$n`) by a linear
//!   search, which makes binding a large group quadratic.
//!
//! On PostgreSQL (`postgres::GroupConn`) a group is one statement outside a transaction
//! block, which inserts the rows (one array per column, so it stays prepared for any group
//! size) and notifies other processes: one round trip, on a connection of the group
//! writer's own, opened on the writer's thread so that the answer wakes the writer there
//! and does not queue behind the requests on the server's runtime.
//!
//! The group writer runs on a thread of its own with both backends (`inbox::writer`).

use std::collections::{BTreeMap, HashMap};

use sqlx::AssertSqlSafe;

use super::inbox::{COLUMNS, NewUpdate, Stored, UpdateRow};
use super::{List, Pools, Result, Store, StoreError, postgres, sqlite};

/// Rows per multi-row INSERT of inbox updates (SQLite). Each size is a prepared statement of
/// its own, kept by the connection, and a statement's program grows with its rows (11 binds
/// a row): kept for every size up to 256, they held about 12 MB of the group writer's
/// connection at 256 connections (massif); up to 32, well under 1.
pub(super) const INSERT_CHUNK: usize = 32;

/// Stores groups of new updates one after the other. Release the held connection with
/// [`GroupWriter::release`] when no group is waiting. Use it on one runtime: on PostgreSQL
/// its connection's socket belongs to the runtime it was opened on.
pub struct GroupWriter {
    store: Store,
    /// The connections of the store's backend (SQLite: its own, and the pool's writer as
    /// its permit; PostgreSQL: its own).
    sqlite: sqlite::GroupConn,
    postgres: postgres::GroupConn,
}

impl GroupWriter {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            sqlite: sqlite::GroupConn::default(),
            postgres: postgres::GroupConn::default(),
        }
    }

    /// Stores `updates` in one transaction, in order; a repeated `(client,
    /// idempotency_key)` stores nothing and answers with the row stored first, also when
    /// the repeat is in the same group. The inbox worker is woken after the commit. The
    /// backends answer with each update's `seq`, or none for a repeat, in order: a group
    /// without repeats (most) is answered without looking anything up by id.
    pub async fn insert(&mut self, updates: &[NewUpdate]) -> Result<Vec<Stored>> {
        let seqs = match &self.store.pools {
            Pools::Sqlite(s) => self.sqlite.insert(s, updates).await?,
            Pools::Postgres(p) => self.postgres.insert(p, updates).await?,
        };
        if seqs.iter().any(Option::is_some) {
            self.store.wakeups().raise_inbox();
        }
        let repeats: Vec<&NewUpdate> = updates
            .iter()
            .zip(&seqs)
            .filter(|(_, seq)| seq.is_none())
            .map(|(u, _)| u)
            .collect();
        let first = self.existing(&repeats).await?;
        let mut out = Vec::with_capacity(updates.len());
        for (u, seq) in updates.iter().zip(seqs) {
            match seq {
                Some(seq) => out.push(Stored::New(seq)),
                None => {
                    let row = u
                        .idempotency_key
                        .as_ref()
                        .and_then(|key| first.get(&(u.client.clone(), key.clone())))
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "update {} was neither stored nor found by its idempotency key",
                                u.id
                            ))
                        })?;
                    out.push(Stored::Existing(Box::new(row.clone())));
                }
            }
        }
        Ok(out)
    }

    /// Gives the SQLite writer connection back to the pool (the queue is empty). The
    /// PostgreSQL writer keeps its own connection.
    pub fn release(&mut self) {
        self.sqlite.release();
    }

    /// The rows stored first under the keys of `repeats`, by `(client, key)`: committed
    /// (earlier, or in this group), so a reader sees them. One query per client, however
    /// many repeats a group holds: a burst of resent updates (an ERP retrying a batch) must
    /// not hold up the next group by a round trip each.
    async fn existing(
        &mut self,
        repeats: &[&NewUpdate],
    ) -> Result<HashMap<(String, String), UpdateRow>> {
        let mut keys: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for u in repeats {
            if let Some(key) = &u.idempotency_key {
                keys.entry(u.client.as_str()).or_default().push(key);
            }
        }
        let mut first = HashMap::new();
        for (client, mut keys) in keys {
            keys.sort_unstable();
            keys.dedup();
            let rows: Vec<UpdateRow> = match &self.store.pools {
                Pools::Sqlite(s) => {
                    let sql = format!(
                        "SELECT {COLUMNS} FROM inbox WHERE client = $1 AND {}",
                        sqlite::DIALECT.in_list("idempotency_key", 2)
                    );
                    sqlx::query_as(AssertSqlSafe(sql))
                        .bind(client)
                        .bind(List(&keys))
                        .fetch_all(s.reader())
                        .await?
                }
                // On the writer's own connection (a pooled one opened on the writer's
                // thread would have its socket driven by the writer's runtime after it went
                // back). A key at a time, as the single-key lookup: `idempotency_key =
                // ANY($2)`, or this join flattened (without `OFFSET 0`), is planned while
                // the inbox is new as a read of all the client's rows, filtered, which grows
                // with the inbox until the statistics catch up.
                Pools::Postgres(p) => {
                    let sql = format!(
                        "SELECT {COLUMNS} FROM UNNEST($2::text[]) AS k(key), LATERAL \
                         (SELECT {COLUMNS} FROM inbox WHERE client = $1 \
                         AND idempotency_key = k.key OFFSET 0) AS i"
                    );
                    self.postgres.existing(p, &sql, client, &keys).await?
                }
            };
            for row in rows {
                if let Some(key) = row.idempotency_key.clone() {
                    first.insert((row.client.clone(), key), row);
                }
            }
        }
        Ok(first)
    }
}

/// The columns a new update sets, in bind order (11 per row), after the verb.
const INSERT_HEAD: &str = " INTO inbox (id, client, idempotency_key, request_hash, \
     order_reference, event, payload, status, response_status, response_body, received_at, \
     next_attempt_at) VALUES ";

/// [`INSERT_HEAD`] and `admitted` (see [`Admit::Later`]).
const INSERT_HEAD_UNADMITTED: &str = " INTO inbox (id, client, idempotency_key, request_hash, \
     order_reference, event, payload, status, response_status, response_body, received_at, \
     next_attempt_at, admitted) VALUES ";

/// How a failed insert ends (other than by a repeated key, which inserts nothing).
#[derive(Clone, Copy, Debug)]
pub(super) enum OnError {
    /// The statement alone is undone (`INSERT`): the transaction goes on. SQLite keeps a
    /// statement journal for that.
    Statement,
    /// The whole transaction is rolled back (`INSERT OR ROLLBACK`, SQLite): for a
    /// transaction that holds nothing else, so SQLite keeps no statement journal.
    Transaction,
}

/// Whether the updates an insert stores go into the per-order index at once (SQLite).
#[derive(Clone, Copy, Debug)]
pub(super) enum Admit {
    /// `admitted = 1` (the column's default): for an insert in a transaction that does
    /// other work, or that a claim may follow at once.
    Now,
    /// `admitted = 0`: the group commit's, which then appends to `inbox_unadmitted` instead
    /// of writing a page of the per-order index for each update; the next claim admits
    /// them (`Tx::admit_updates`, see the SQLite migration `0013_inbox_admitted`).
    Later,
}

/// One multi-row SQLite INSERT of `rows` updates; a conflicting key inserts nothing. It
/// returns nothing: append [`RETURNING`] for the `(id, seq)` of the rows inserted.
pub(super) fn insert_sql(on_error: OnError, admit: Admit, rows: usize) -> String {
    let mut sql = String::with_capacity(INSERT_HEAD_UNADMITTED.len() + rows * 64 + 96);
    sql.push_str(match on_error {
        OnError::Statement => "INSERT",
        OnError::Transaction => "INSERT OR ROLLBACK",
    });
    sql.push_str(match admit {
        Admit::Now => INSERT_HEAD,
        Admit::Later => INSERT_HEAD_UNADMITTED,
    });
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        // `status` is a literal; `admitted` too where it is not the default.
        let row = match admit {
            Admit::Now => sqlite::DIALECT.values_row(i, 11, &[(7, "'accepted'")]),
            Admit::Later => sqlite::DIALECT.values_row(i, 11, &[(7, "'accepted'"), (12, "0")]),
        };
        sql.push_str(&row);
    }
    sql.push_str(" ON CONFLICT (client, idempotency_key) DO NOTHING");
    sql
}

/// The `(id, seq)` of the rows an [`insert_sql`] inserted. SQLite collects a `RETURNING`
/// statement's rows in a temporary table before the first is returned.
pub(super) const RETURNING: &str = " RETURNING id, seq";
