//! Warnings about what Spryker silently gets wrong: duplicate state or event names across
//! subprocesses, more than one onEnter event out of a state, a state that mixes manual,
//! timeout and event-less transitions, unreachable states.

use std::fmt;

use serde::Serialize;

use crate::model::Origin;

/// Stable warning codes, for `--json` output and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    DuplicateState,
    DuplicateEvent,
    SeveralOnEnter,
    MixedTransitions,
    Unreachable,
    UnusedEvent,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub code: WarningCode,
    #[serde(serialize_with = "crate::check::ser_origin")]
    pub origin: Origin,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.origin, self.message)
    }
}

pub(crate) fn ser_origin<S: serde::Serializer>(o: &Origin, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(o)
}
