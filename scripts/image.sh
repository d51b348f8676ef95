#!/usr/bin/env bash
# Builds the gpt2d image from deploy/Dockerfile on a machine that reaches no image registry: the
# bases default to the local Debian 12 image of scripts/docker-base.sh.
#
#   scripts/image.sh [TAG]            the runtime stage from this checkout's build (run scripts/build.sh
#                                     first): scripts/bundle.sh, then the `prebuilt` bundle; seconds when cached
#   scripts/image.sh --full [TAG]     the whole multi-stage build, compiling inside Docker as
#                                     scripts/setup.sh + scripts/build.sh do (tens of minutes on 2 cores)
#
# TAG defaults to gpt2d:latest. GPT2D_RUNTIME_BASE / GPT2D_BUILD_BASE override the bases (on a GPU
# node with a registry: nvidia/cuda:13.0.2-base-ubuntu24.04, the Dockerfile's default).
set -euo pipefail
cd "$(dirname "$0")/.."
full=0
if [[ ${1:-} == --full ]]; then full=1; shift; fi
TAG=${1:-gpt2d:latest}
# Debian's docker client (20.10) has BuildKit built in; newer clients need the buildx plugin for it.
if [[ -z ${DOCKER:-} ]]; then
  if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
export DOCKER DOCKER_BUILDKIT=1
base=$(scripts/docker-base.sh)
RUNTIME_BASE=${GPT2D_RUNTIME_BASE:-$base}
BUILD_BASE=${GPT2D_BUILD_BASE:-$base}
SECONDS=0
if ((full)); then
  $DOCKER build -f deploy/Dockerfile --build-arg BUILD_BASE="$BUILD_BASE" --build-arg RUNTIME_BASE="$RUNTIME_BASE" \
    --progress=plain -t "$TAG" .
else
  BUILD=${GPT2_BUILD_DIR:-build}
  scripts/bundle.sh "$BUILD/bundle/gpt2d" >/dev/null
  $DOCKER build -q -f deploy/Dockerfile --build-arg BUNDLE=prebuilt --build-arg RUNTIME_BASE="$RUNTIME_BASE" \
    -t "$TAG" "$BUILD/bundle" >/dev/null
fi
size=$($DOCKER image inspect -f '{{.Size}}' "$TAG")
echo "image: $TAG ($((size / 1000000)) MB, ${SECONDS}s)"
