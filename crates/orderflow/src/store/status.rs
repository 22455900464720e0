//! [`UpdateStatus`]: where an inbox update is, as stored, filtered and shown. Stored as its
//! name; a name this build does not know is a decode error (the row is reported as
//! corrupt, never read as some default status; see `store::names`).

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// Where an update is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStatus {
    /// Stored; waiting for the worker (also between retries).
    Accepted,
    /// Claimed by a worker or processed inline.
    Processing,
    Applied,
    /// Waiting for its order to exist or its event to apply; retried when the order changes.
    Parked,
    /// Its event did not apply and the event's policy is `ignore`.
    Ignored,
    /// Its event did not apply under the `reject` policy, can never apply (every selected
    /// item is in a final state), or it cannot apply to its order.
    Rejected,
    /// Out of attempts, or parked past its time limit.
    Dead,
}

impl UpdateStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "accepted" => Self::Accepted,
            "processing" => Self::Processing,
            "applied" => Self::Applied,
            "parked" => Self::Parked,
            "ignored" => Self::Ignored,
            "rejected" => Self::Rejected,
            "dead" => Self::Dead,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Processing => "processing",
            Self::Applied => "applied",
            Self::Parked => "parked",
            Self::Ignored => "ignored",
            Self::Rejected => "rejected",
            Self::Dead => "dead",
        }
    }

    /// No worker will touch it again (unless retried by an operator).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Applied | Self::Ignored | Self::Rejected | Self::Dead
        )
    }

    pub const ALL: [Self; 7] = [
        Self::Accepted,
        Self::Processing,
        Self::Applied,
        Self::Parked,
        Self::Ignored,
        Self::Rejected,
        Self::Dead,
    ];
}

/// From its name; anything else is "must be one of accepted, processing, ...".
impl<'de> Deserialize<'de> for UpdateStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = UpdateStatus;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                let names: Vec<&str> = UpdateStatus::ALL.iter().map(|s| s.as_str()).collect();
                write!(f, "one of {}", names.join(", "))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<UpdateStatus, E> {
                UpdateStatus::parse(s)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_str(V)
    }
}

impl std::fmt::Display for UpdateStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl UpdateStatus {
    /// The statuses an operator may retry (also the SQL list `RETRYABLE` in `store::inbox`).
    pub const RETRYABLE: [Self; 4] = [Self::Dead, Self::Rejected, Self::Ignored, Self::Parked];
}
