//! Outbound HTTP: what orderflow sends to other systems after a commit. [`attempt`] is one
//! request and its verdict, shared by every sender; [`effects`] runs HTTP commands after
//! commit.

pub mod attempt;
pub mod effects;
