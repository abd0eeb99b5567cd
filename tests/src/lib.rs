//! `ycloud-tests`: cross-crate integration and end-to-end tests on real OVN, OVS and
//! network namespaces. The tests live in `tests/tests/`; this library is empty.
