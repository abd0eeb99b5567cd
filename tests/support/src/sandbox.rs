//! A whole OVN sandbox per test, through `hack/ovn-sandbox.sh`.
