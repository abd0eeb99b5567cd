#!/usr/bin/env bash
# Benchmarks against baselines measured in the same run. Each prints JSON lines
# ({"name", "params", "value", "unit", "baseline", "ratio", ...}) and a table.
#
#   bash hack/bench.sh [all|ovsdb|sync|parse|churn|flows|cni|probe|probe-scale|datapath] [--quick]
#
# --quick runs small sizes (CI smoke use, a few minutes); without it the full sizes run
# (up to an hour). Needs root (real OVN sandboxes) on Debian 12; installs what it needs.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

what=${1:-all}; shift || true
quick=()
for a in "$@"; do [ "$a" = --quick ] && quick=(--quick); done

# name -> "crate bench-target"; a benchmark that is not built yet says so.
declare -A BENCH=(
  [flows]="ycloud-controller flows"
  [ovsdb]="ycloud-ovsdb ovsdb"
  [cni]="ycloud-cni cni"
  [sync]="ycloud-controller sync"
  [parse]="ycloud-controller parse"
  [churn]="ycloud-controller churn"
  [probe]="ycloud-controller probe"
  [probe-scale]="ycloud-probe scale"
  [datapath]="ycloud-tests datapath"
)
order=(ovsdb sync parse churn flows cni probe probe-scale datapath)

run_one() {
  local name=$1 spec crate target
  spec=${BENCH[$name]:-}
  [ -n "$spec" ] || { echo "hack/bench.sh: unknown benchmark '$name' (one of: all ${order[*]})" >&2; exit 2; }
  read -r crate target <<<"$spec"
  if ! cargo metadata --no-deps --format-version 1 2>/dev/null \
      | python3 -c 'import json,sys; c,t=sys.argv[1:]; m=json.load(sys.stdin); sys.exit(0 if any(p["name"]==c and any(x["name"]==t and "bench" in x["kind"] for x in p["targets"]) for p in m["packages"]) else 1)' "$crate" "$target"; then
    echo "{\"name\":\"$name\",\"status\":\"not implemented yet\"}"
    return 0
  fi
  echo "==> $name ($crate, bench $target) ${quick[*]}" >&2
  cargo bench --locked -q -p "$crate" --bench "$target" -- "${quick[@]}"
}

[ "$(id -u)" = 0 ] || { echo "hack/bench.sh: run as root (benchmarks start OVN sandboxes)" >&2; exit 1; }
bash hack/install-deps.sh >/dev/null

# The probe bench runs the product's binaries through the e2e harness. They are built here,
# once, in a target directory of their own (YCLOUD_BIN_DIR): `cargo bench -p ycloud-cni`
# builds the same binaries with its dev-dependencies' features into the shared one, so the
# harness' own build rebuilt them every run (120-137 s of the probe bench, session 9).
if [ "$what" = all ] || [ "$what" = probe ]; then
  product_target="${CARGO_TARGET_DIR:-$PWD/target}/product"
  echo "==> the product binaries (release) into $product_target" >&2
  CARGO_TARGET_DIR="$product_target" cargo build --locked -q --release --bins \
    -p ycloud-controller -p ycloud-cni
  export YCLOUD_BIN_DIR="$product_target/release"
fi
if [ "$what" = all ]; then
  # One broken benchmark must not hide the others' figures: run them all, fail at the end.
  failed=()
  for n in "${order[@]}"; do
    run_one "$n" || { failed+=("$n"); echo "{\"name\":\"$n\",\"status\":\"failed\"}"; }
  done
  [ ${#failed[@]} -eq 0 ] || { echo "hack/bench.sh: failed: ${failed[*]}" >&2; exit 1; }
else
  run_one "$what"
fi
