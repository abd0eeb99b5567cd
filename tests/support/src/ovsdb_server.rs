//! A bare `ovsdb-server` per test.
