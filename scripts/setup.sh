#!/usr/bin/env bash
# Sets up a Debian 12 machine to build, test and run gpt2d. Idempotent: re-running it only
# installs what is missing. Everything comes from Debian's packages and PyPI; nothing is
# downloaded at run time afterwards.
#
#   scripts/setup.sh            install system packages (when root), the Python venv, the vocabulary
#   GPT2D_SKIP_APT=1 ...        skip the Debian packages (e.g. when not root and already installed)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# --- Debian packages (Debian 12 "bookworm" versions, pinned by the release) ---------------------
# gRPC 1.51, protobuf 3.21, abseil 20220623, prometheus-cpp 1.0.1, GoogleTest 1.12.1, CLI11 2.1.2,
# SQLite 3.40, PCRE2 10.42, nlohmann-json 3.11.2, yaml-cpp 0.7, gloo headers (git20220518; the
# compiled gloo is the one inside libtorch_cpu, see docs/collectives.md), jemalloc 5.3, cpp-httplib 0.11.4 (the /metrics and /healthz server), openssl (test
# certificates), Boost 1.74 (header-only Beast + Asio: the OpenAI-compatible HTTP API), Prometheus 2.42 (server and promtool,
# for tests), zlib 1.2.13 (gzip input to prep), python3-doc 3.11 (the demo corpus), ccache, ninja.
# kubernetes-validate (PyPI) checks deploy/k8s against the Kubernetes API schemas offline; the
# openai SDK and lm-eval (PyPI) are the clients the OpenAI-compatible API is tested with.
APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  prometheus-cpp-dev libgtest-dev libgmock-dev googletest libcli11-dev libsqlite3-dev sqlite3
  libpcre2-dev nlohmann-json3-dev libyaml-cpp-dev libssl-dev libgloo-dev libjemalloc-dev
  libcpp-httplib-dev libboost1.74-dev zlib1g-dev openssl curl
  prometheus python3-doc python3-venv
)
# The deployment tests (tests/deploy): Docker 20.10 (engine with BuildKit, and its client), Compose
# 1.29, debootstrap for the local base image; the fuzzers (tests/fuzz): clang 14 with its libFuzzer
# runtime. Not needed to build: the image's build stage skips them.
DEPLOY_APT_PACKAGES=(docker.io docker-compose debootstrap clang-14 libclang-rt-14-dev)
[[ "${GPT2D_SKIP_DEPLOY_TOOLS:-0}" == 1 ]] || APT_PACKAGES+=("${DEPLOY_APT_PACKAGES[@]}")
if [[ "${GPT2D_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# --- Python environment (pinned) ----------------------------------------------------------------
# torch is the PyPI wheel: its bundled libtorch is the C++ library we link (CUDA build, runs on CPU).
# pyarrow reads parquet for `gpt2-worker prep` (worker/data/parquet_text.py): Debian 12 has no Arrow C++.
PY_PACKAGES=(
  torch==2.15.0 transformers==5.23.0 tiktoken==0.14.0 safetensors==0.8.0 numpy==2.4.6
  grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1
  pytest==9.2.0 pyyaml==6.0.3 kubernetes-validate==1.37.0
  pyarrow==26.0.1
)
# The clients the OpenAI-compatible API is tested with; not in the image (its build skips the
# test tools).
[[ "${GPT2D_SKIP_DEPLOY_TOOLS:-0}" == 1 ]] || PY_PACKAGES+=(openai==3.60.0 "lm-eval[api]==0.4.13")
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.gpt2d-requirements
want=$(printf '%s\n' "${PY_PACKAGES[@]}")
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  echo "setup: installing Python packages into .venv (first time: several GB for torch + CUDA runtime)"
  .venv/bin/pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  printf '%s\n' "${PY_PACKAGES[@]}" >"$stamp"
fi

# --- GPT-2 vocabulary ---------------------------------------------------------------------------
# tiktoken ships no vocabulary (it downloads at run time, impossible here). openai-whisper's sdist
# carries the same file as whisper/assets/gpt2.tiktoken; we take it from the sdist without building
# it and check tiktoken's published r50k_base SHA-256.
VOCAB=assets/gpt2.tiktoken
VOCAB_SHA256=306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930
if ! echo "$VOCAB_SHA256  $VOCAB" | sha256sum -c --status 2>/dev/null; then
  echo "setup: fetching the GPT-2 vocabulary from the openai-whisper==20250625 sdist"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  .venv/bin/pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    openai-whisper==20250625 -d "$tmp"
  tar -xzf "$tmp"/openai_whisper-20250625.tar.gz -C "$tmp" --wildcards '*/whisper/assets/gpt2.tiktoken'
  mkdir -p assets
  cp "$tmp"/openai_whisper-20250625/whisper/assets/gpt2.tiktoken "$VOCAB"
  echo "$VOCAB_SHA256  $VOCAB" | sha256sum -c --status || { echo "setup: $VOCAB checksum mismatch" >&2; exit 1; }
fi
echo "setup: ready ($ROOT)"
