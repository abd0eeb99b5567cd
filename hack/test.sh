#!/usr/bin/env bash
# The README's test command: sets up what the tests need, then runs every check CI runs.
#   bash hack/test.sh            # everything
#   bash hack/test.sh -- FILTER  # only tests matching FILTER (after the static checks)
# Needs root (network namespaces, OVS) on Debian 12.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
T0=$(date +%s)
step() { printf '\n==> [%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

filter=()
if [ "${1:-}" = "--" ]; then shift; filter=("$@"); fi

[ "$(id -u)" = 0 ] || { echo "hack/test.sh: run as root (tests create network namespaces and OVS bridges)" >&2; exit 1; }

step "dependencies"
bash hack/install-deps.sh

# What exists before the tests, to prove afterwards that they left nothing behind.
snapshot() {
  { ip netns list 2>/dev/null | awk '{print "netns " $1}'
    ip -o link show 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print "link " $2}'
    for pid in $(pgrep -f '^(\S*/)?(ovsdb-server|ovs-vswitchd|ovn-northd|ovn-controller|ycloud-cnid|ycloud-controller)( |$)' 2>/dev/null); do
      echo "pid $pid $(tr '\0' ' ' </proc/$pid/cmdline 2>/dev/null | cut -c1-160)"
    done
  } | sort
}
before=$(mktemp); after=$(mktemp); trap 'rm -f "$before" "$after"' EXIT
snapshot >"$before"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors; default features, then all)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Optional parts (the controller's Kubernetes writers, the crdgen binary) are linted too.
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "generated files are committed and current"
bash hack/gen.sh --check

step "cargo nextest run --workspace --all-features"
# The e2e suite runs the product binaries; nextest's build has just made them (every crate
# with integration tests gets its binaries built). Pointing the suite at them keeps it from
# running its own `cargo build` while other tests execute those same files.
YCLOUD_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/debug" \
  cargo nextest run --workspace --all-features --locked --no-fail-fast "${filter[@]}"

step "the demo (the README's main command), real product end to end"
bash hack/demo.sh

step "nothing left behind (processes, namespaces, links)"
# A daemon stopped at the very end may take a moment to go: look twice.
sleep 1
snapshot >"$after"
leaked=$(comm -13 "$before" "$after" || true)
if [ -n "$leaked" ]; then sleep 3; snapshot >"$after"; leaked=$(comm -13 "$before" "$after" || true); fi
if [ -n "$leaked" ]; then
  echo "tests left these behind:" >&2; echo "$leaked" | sed 's/^/  /' >&2; exit 1
fi
echo "clean: no new process, namespace or link"
step "all checks passed in $(( $(date +%s) - T0 ))s"
