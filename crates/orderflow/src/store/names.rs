//! Enums stored as their names: [`super::status::UpdateStatus`], [`TimerKind`] and the
//! client role. A name this build does not know fails to decode, which the store reports
//! as [`super::StoreError::Corrupt`]: never read as some default.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

use super::status::UpdateStatus;
use crate::domain::types::Role;

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// A state's timeout event (the timer names the event).
    Timeout,
    /// An event-less transition whose condition is checked again on a backoff.
    Condition,
}

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Condition => "condition",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "timeout" => Some(Self::Timeout),
            "condition" => Some(Self::Condition),
            _ => None,
        }
    }
}

/// Implements `Type`, `Encode` and `Decode` on both backends for an enum with `as_str` and
/// `parse`, stored as text; `$what` names it in a decode error.
macro_rules! stored_as_name {
    ($ty:ty, $what:literal) => {
        impl Type<Sqlite> for $ty {
            fn type_info() -> SqliteTypeInfo {
                <&str as Type<Sqlite>>::type_info()
            }

            fn compatible(ty: &SqliteTypeInfo) -> bool {
                <&str as Type<Sqlite>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, Sqlite> for $ty {
            fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
                let name = <&str as Decode<Sqlite>>::decode(value)?;
                <$ty>::parse(name).ok_or_else(|| format!("unknown {} {name:?}", $what).into())
            }
        }

        impl Encode<'_, Sqlite> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut SqliteArgumentsBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Sqlite>>::encode(self.as_str(), buf)
            }
        }

        impl Type<Postgres> for $ty {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, Postgres> for $ty {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let name = <&str as Decode<Postgres>>::decode(value)?;
                <$ty>::parse(name).ok_or_else(|| format!("unknown {} {name:?}", $what).into())
            }
        }

        impl Encode<'_, Postgres> for $ty {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $ty {
            fn array_type_info() -> PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
    };
}

stored_as_name!(UpdateStatus, "update status");
stored_as_name!(TimerKind, "timer kind");
stored_as_name!(Role, "client role");

#[cfg(test)]
mod tests {
    use super::TimerKind;

    #[test]
    fn timer_kinds_read_back_their_names() {
        for k in [TimerKind::Timeout, TimerKind::Condition] {
            assert_eq!(TimerKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(TimerKind::parse("alarm"), None);
    }
}
