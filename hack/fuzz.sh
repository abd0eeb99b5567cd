#!/usr/bin/env bash
# Runs the OVSDB wire-decoder fuzz target (ovsdb/fuzz) for a bounded time.
#   hack/fuzz.sh [SECONDS]   (default 60)
# Needs the nightly toolchain (installed here); installs cargo-fuzz if it is missing.
# Exit status is non-zero if libFuzzer found a crash (the input is left in
# ovsdb/fuzz/artifacts/decode/).
set -euo pipefail
secs="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (nightly)…" >&2
    cargo +nightly install cargo-fuzz --locked
fi

cd "$root/ovsdb"
mkdir -p fuzz/corpus/decode
# Seed corpus: a few real OVSDB messages.
printf '%s' '{"id":1,"result":["OVN_Northbound","_Server"],"error":null}' >fuzz/corpus/decode/reply
printf '%s' '{"method":"update3","params":["m","0b5c",{"T":{"u":{"modify":{"c":["set",[1]]}}}}],"id":null}' >fuzz/corpus/decode/update3
printf '%s' '{"method":"echo","params":[],"id":"echo"}{"id":2,"result":null,"error":{"error":"x","details":"\"}"}}' >fuzz/corpus/decode/two
cargo +nightly fuzz run decode fuzz/corpus/decode -- -max_total_time="$secs" -max_len=8192
