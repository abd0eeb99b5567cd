#!/usr/bin/env bash
# Validates CRD manifests as apiextensions.k8s.io/v1 objects against the Kubernetes OpenAPI
# schemas, strictly (unknown fields are errors), with kubernetes-validate from PyPI.
#
#   hack/validate-crds.sh [FILE...]      default: charts/ycloud/crds/*.yaml
#
# kubernetes-validate is installed on first use into a venv under the cargo target directory
# ($YCLOUD_VALIDATE_VENV overrides the location). The crds test suite runs this script.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${YCLOUD_VALIDATE_VENV:-$target/venv-kubernetes-validate}"
package_version=1.37.0     # bundles the schemas of Kubernetes 1.2x..1.37
kubernetes_version=1.33.0  # the oldest API server the chart supports

mkdir -p "$(dirname "$venv")"
(
  # One installer at a time: tests may start this script concurrently.
  flock 9
  if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$package_version"
  fi
) 9>"$venv.lock"

if [ "$#" -eq 0 ]; then
  set -- "$root"/charts/ycloud/crds/*.yaml
fi
exec "$venv/bin/kubernetes-validate" --kubernetes-version "$kubernetes_version" --strict --quiet "$@"
