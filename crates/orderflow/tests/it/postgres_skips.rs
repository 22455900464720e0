//! Without a PostgreSQL test database the PostgreSQL tests are built ignored (`build.rs`),
//! so `cargo test` reports them as ignored, with the reason, instead of passed.

/// The build decided from the environment the tests run in: cargo re-runs the build
/// script when `ORDERFLOW_TEST_DATABASE_URL` or `CI` changes, so PostgreSQL tests are
/// ignored exactly when there is no database to run them against and this is not CI (where
/// they run and fail without one).
#[test]
fn postgres_tests_are_ignored_exactly_when_no_database_is_configured() {
    let configured = std::env::var_os("ORDERFLOW_TEST_DATABASE_URL").is_some_and(|v| !v.is_empty());
    let ci = std::env::var_os("CI").is_some();
    assert_eq!(
        cfg!(orderflow_no_test_postgres),
        !configured && !ci,
        "ORDERFLOW_TEST_DATABASE_URL set: {configured}, CI set: {ci}"
    );
}
