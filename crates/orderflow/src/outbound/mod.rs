//! Outbound HTTP: what orderflow sends to other systems after a commit. [`attempt`] is one
//! request and its verdict, shared by every sender.

pub mod attempt;
