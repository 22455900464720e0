//! What differs between the backends' SQL, as data: each backend module ([`super::sqlite`],
//! [`super::postgres`]) fills one [`Dialect`], and the shared code picks its texts through
//! [`super::Store::dialect`] or [`super::Tx::dialect`]. A statement whose shape differs
//! (not only its text) is a function of the backend module instead.

use serde::Serialize;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo};
use sqlx::{Encode, Postgres, Sqlite, Type};

/// The statement texts one backend writes its own way.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// `col` is in the [`List`] bound as `$n` (see [`Dialect::in_list`]).
    pub list: fn(&str, usize) -> String,
    /// The `n`th parameter of a multi-row statement (SQLite binds anonymous ones in linear
    /// time, numbered ones in quadratic time).
    pub placeholder: fn(usize) -> String,
    /// Appended to a read of an order to hold it until commit.
    pub lock_order: &'static str,
    /// [`Dialect::lock_order`] that skips an order another transaction holds.
    pub try_lock_order: &'static str,
    /// Appended to a read of rows to hold them until commit.
    pub lock_rows: &'static str,
    /// Read the inbox through its due index (`inbox r` + this).
    pub due_index: &'static str,
    /// Appended to a claim's read of rows `r` (effects, a worker's batch of updates): hold
    /// them until commit, skipping rows other transactions hold.
    pub claim_lock: &'static str,
    /// The inbox claim's read around `inner` (due rows in claim order, no limit): at most `$2`
    /// rows, skipping those other claims hold.
    pub claim_read: fn(&str) -> String,
    /// The group commit stores updates without an entry in the per-order index, and a
    /// claim admits them first (see `Tx::admit_updates`); else every update has its entry
    /// as it is stored.
    pub admits: bool,
    /// Claims run side by side: the claim's update checks again, on a snapshot taken after
    /// the read's locks, that each row is still the next of its order.
    pub claim_recheck: bool,
    /// Begins a claim's transaction, with what runs before the claim in it (else a plain
    /// [`Store::begin`](super::Store::begin)).
    pub claim_begin: Option<&'static str>,
    /// Begins the transaction that claims and holds a worker's batch (else a plain
    /// [`Store::begin`](super::Store::begin)).
    pub batch_begin: Option<&'static str>,
    /// `errors` with the JSON value `$4` appended.
    pub append_error: &'static str,
    /// The SET clause of an operator's retry (`$1` = now, `$2` = the history entry).
    pub retry_set: &'static str,
    /// The quantity of SKU `$1` held by reserved items, saturating at `i64::MAX`.
    pub reserved_quantity: &'static str,
    /// Prefix that makes a query return its plan, one row per plan line (last column).
    pub explain: &'static str,
    /// Change-feed rows after the checkpoint `($1 = tx, $2 = seq)`, in commit order, at
    /// most `$3`.
    pub feed_after: &'static str,
    /// The JSON array of the distinct values of `items.<col>` of order `o` (an `orders` row
    /// in scope), sorted by their bytes; `[]` without items.
    pub sorted_item_values: fn(&str) -> String,
    /// Change-feed rows past the checkpoint `$1` and the oldest one's time.
    pub feed_backlog: &'static str,
    /// Whole change-feed rows with their order's reference after the cursor
    /// `($1 = tx, $2 = seq)`, in commit order, at most `$3`, none visible in the start
    /// snapshot `$4` (subscriptions).
    pub feed_rows_after: &'static str,
    /// Whole change-feed rows committed at or after `$1` and at or before the cursor
    /// `($2 = tx, $3 = seq)` or visible in the start snapshot `$6`, after `seq` `$4`, in
    /// `seq` order, at most `$5` (a replay).
    pub feed_rows_replay: &'static str,
    /// The feed's current end as a cursor `(tx, seq)` and a start snapshot: a new
    /// subscription starts there.
    pub feed_end: &'static str,
    /// Appended to the claim of deliveries (`deliveries d`): skip rows other claims hold.
    pub delivery_claim_lock: &'static str,
    /// Appended to the read of a subscription that materialises its deliveries: skip one
    /// another process materialises.
    pub subscription_lock: &'static str,
    /// Appended to the read of the subscriptions an `update.dead` event is written for:
    /// one being deleted is waited for and then not seen (its deliveries would fail the
    /// update's transaction on the foreign key).
    pub subscription_key_share: &'static str,
    /// The position `(tx, seq)` of the last change of order `$2` that subscription `$1`
    /// has yet to pass (after its cursor, not before its start); no row when none.
    pub feed_pending_of_order: &'static str,
}

impl Dialect {
    /// `col` is in the [`List`] bound as `$n`.
    pub(crate) fn in_list(&self, col: &str, n: usize) -> String {
        (self.list)(col, n)
    }

    /// One row of `cols` placeholders, the `row`th of a multi-row statement, with `fixed`
    /// SQL values inserted at their positions.
    pub(crate) fn values_row(&self, row: usize, cols: usize, fixed: &[(usize, &str)]) -> String {
        let mut values: Vec<String> = (1..=cols)
            .map(|n| (self.placeholder)(row * cols + n))
            .collect();
        for &(at, sql) in fixed {
            values.insert(at, sql.to_owned());
        }
        format!("({})", values.join(", "))
    }
}

/// A list of values bound as one parameter: a PostgreSQL array, or JSON text on SQLite
/// (read there with `json_each`). [`Dialect::in_list`] writes the test.
#[derive(Clone, Copy, Debug)]
pub(crate) struct List<'a, T>(pub &'a [T]);

impl<T> Type<Sqlite> for List<'_, T> {
    fn type_info() -> SqliteTypeInfo {
        <&str as Type<Sqlite>>::type_info()
    }
}

impl<T: Serialize> Encode<'_, Sqlite> for List<'_, T> {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        let text = serde_json::to_string(self.0)?;
        <String as Encode<Sqlite>>::encode(text, buf)
    }
}

impl<T: PgHasArrayType> Type<Postgres> for List<'_, T> {
    fn type_info() -> PgTypeInfo {
        T::array_type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        T::array_compatible(ty)
    }
}

impl<'q, T> Encode<'q, Postgres> for List<'_, T>
where
    T: Encode<'q, Postgres> + Type<Postgres>,
{
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&[T] as Encode<'q, Postgres>>::encode_by_ref(&self.0, buf)
    }
}
