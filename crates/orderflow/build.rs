//! Marks the PostgreSQL tests ignored when no test database is configured, so that
//! `cargo test` reports them as "ignored" (with the reason, and counted in its summary)
//! instead of "passed" having done nothing. In CI (`CI` set) they are never ignored: there
//! a missing `ORDERFLOW_TEST_DATABASE_URL` fails them.
//!
//! Changing either variable re-runs this script and rebuilds the crate with or without the
//! `orderflow_no_test_postgres` cfg; nothing but the tests reads it.
//!
//! `sqlx::migrate!` embeds the migration files, but on stable Rust it cannot tell Cargo to
//! watch them: the script does, so a new or changed migration rebuilds the crate.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(orderflow_no_test_postgres)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=migrations");
    println!("cargo::rerun-if-env-changed=ORDERFLOW_TEST_DATABASE_URL");
    println!("cargo::rerun-if-env-changed=CI");
    let configured = std::env::var_os("ORDERFLOW_TEST_DATABASE_URL").is_some_and(|v| !v.is_empty());
    if !configured && std::env::var_os("CI").is_none() {
        println!("cargo::rustc-cfg=orderflow_no_test_postgres");
    }
}
