#!/usr/bin/env bash
# Regenerates the committed generated files: the CRD YAML (charts/ycloud/crds/), the API
# reference (docs/api.md) and the
# typed OVSDB models (ovsdb/src/models/). With --check, fails when the committed files
# differ from what the generators write now.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
check=0; [ "${1:-}" = "--check" ] && check=1

cargo run --quiet --locked -p ycloud-crds --features crdgen --bin crdgen -- charts/ycloud/crds docs/api.md
cargo run --quiet --locked -p ycloud-ovsdb --bin ovsdb-modelgen -- \
  ovsdb/schemas/ovn-nb.ovsschema ovsdb/src/models/nb.rs
cargo run --quiet --locked -p ycloud-ovsdb --bin ovsdb-modelgen -- \
  ovsdb/schemas/ovn-sb.ovsschema ovsdb/src/models/sb.rs
cargo run --quiet --locked -p ycloud-ovsdb --bin ovsdb-modelgen -- \
  ovsdb/schemas/vswitch.ovsschema ovsdb/src/models/vswitch.rs

if [ $check = 1 ]; then
  if ! git diff --exit-code --stat -- charts/ycloud/crds docs/api.md ovsdb/src/models; then
    echo "generated files drifted from the code: run 'bash hack/gen.sh' and commit the result" >&2
    exit 1
  fi
  untracked=$(git ls-files --others --exclude-standard -- charts/ycloud/crds docs/api.md ovsdb/src/models)
  if [ -n "$untracked" ]; then
    echo "generated files not committed: $untracked" >&2; exit 1
  fi
  echo "generated files are current"
fi
