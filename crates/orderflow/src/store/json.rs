//! [`StoredJson`]: a JSON column that never fails the row it is read with.

use serde::de::DeserializeOwned;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteTypeInfo, SqliteValueRef};
use sqlx::types::Json;
use sqlx::{Decode, Postgres, Sqlite, Type};

/// A JSON value as read from the store, or why it could not be read.
///
/// A worker reads many inbox rows in one statement; if one of them held a value that does
/// not decode (written by hand, by an older build, or by a bug), failing the statement would
/// stop the worker for every order. Reading the column into this type keeps the error with
/// its row instead, so that row alone can be set aside.
#[derive(Clone, Debug)]
pub struct StoredJson<T>(Result<T, String>);

impl<T> StoredJson<T> {
    /// The value, or the decoder's error.
    pub fn get(&self) -> Result<&T, &str> {
        self.0.as_ref().map_err(String::as_str)
    }

    pub fn ok(&self) -> Option<&T> {
        self.0.as_ref().ok()
    }

    /// A value that was read and parsed.
    pub(crate) fn parsed(value: T) -> Self {
        Self(Ok(value))
    }

    fn from_decoded(decoded: Result<Json<T>, BoxDynError>) -> Self {
        Self(decoded.map(|j| j.0).map_err(|e| e.to_string()))
    }
}

impl<T> Type<Sqlite> for StoredJson<T> {
    fn type_info() -> SqliteTypeInfo {
        <Json<T> as Type<Sqlite>>::type_info()
    }

    /// Any storage class: a value of the wrong class is reported by the decode, per row.
    fn compatible(_: &SqliteTypeInfo) -> bool {
        true
    }
}

impl<'r, T: DeserializeOwned> Decode<'r, Sqlite> for StoredJson<T> {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self::from_decoded(<Json<T> as Decode<Sqlite>>::decode(
            value,
        )))
    }
}

impl<T> Type<Postgres> for StoredJson<T> {
    fn type_info() -> PgTypeInfo {
        <Json<T> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Json<T> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r, T: DeserializeOwned> Decode<'r, Postgres> for StoredJson<T> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self::from_decoded(<Json<T> as Decode<Postgres>>::decode(
            value,
        )))
    }
}
