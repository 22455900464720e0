//! Outbound HTTP: what orderflow sends to other systems after a commit. [`attempt`] is one
//! request and its verdict, shared by every sender; [`address`] decides which URLs may be
//! called; [`effects`] runs HTTP commands after commit.

pub mod address;
pub mod attempt;
pub mod effects;
