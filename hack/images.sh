#!/usr/bin/env bash
# Builds the two container images where a container engine exists:
#
#   hack/images.sh [--push]      REGISTRY=ghcr.io/ycloud TAG=0.1.0 by default
#
#   $REGISTRY/ycloud-controller:$TAG   from Dockerfile.controller
#   $REGISTRY/ycloud-cni:$TAG          from Dockerfile.cni (also the chart's default OVN image)
#
# Uses the first of docker, podman, nerdctl, buildah it finds ($ENGINE overrides). Where
# none is installed (as on the project's CI machine, which has no container engine) it
# prints "skipped" and exits 0: the images cannot be built there, and hack/helm-test.sh
# tests everything else about the chart.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
registry="${REGISTRY:-ghcr.io/ycloud}"
tag="${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/charts/ycloud/Chart.yaml")}"
push=false
for arg in "$@"; do
  case "$arg" in
    --push) push=true ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "hack/images.sh: unknown argument $arg (only --push)" >&2; exit 2 ;;
  esac
done

# An engine counts only if it answers `info`: a docker client without a daemon (as on the
# CI machine) cannot build anything.
usable() { command -v "$1" >/dev/null 2>&1 && "$1" info >/dev/null 2>&1; }
engine="${ENGINE:-}"
if [ -n "$engine" ]; then
  usable "$engine" || { echo "hack/images.sh: ENGINE=$engine is not installed or does not answer '$engine info'" >&2; exit 1; }
else
  found=""
  for e in docker podman nerdctl buildah; do
    if usable "$e"; then engine="$e"; break; fi
    if command -v "$e" >/dev/null 2>&1; then found="$found $e"; fi
  done
  if [ -z "$engine" ]; then
    echo "hack/images.sh: skipped: no working container engine on this machine (docker, podman, nerdctl or buildah; found but not answering 'info':${found:- none}); images not built"
    exit 0
  fi
fi
# The Dockerfiles use BuildKit cache mounts (RUN --mount=type=cache).
if [ "$engine" = docker ] && ! docker buildx version >/dev/null 2>&1; then
  echo "hack/images.sh: docker has no buildx (BuildKit), which the Dockerfiles need" >&2; exit 1
fi

build() {
  local dockerfile="$1" image="$2"
  echo "==> $engine: $image from $dockerfile"
  if [ "$engine" = buildah ]; then
    buildah bud --layers -f "$root/$dockerfile" -t "$image" "$root"
  else
    DOCKER_BUILDKIT=1 "$engine" build -f "$root/$dockerfile" -t "$image" "$root"
  fi
  if $push; then "$engine" push "$image"; fi
}
build Dockerfile.controller "$registry/ycloud-controller:$tag"
build Dockerfile.cni "$registry/ycloud-cni:$tag"
echo "built: $registry/ycloud-controller:$tag $registry/ycloud-cni:$tag"
