#!/usr/bin/env bash
# Configures and builds everything into build/ (or $GPT2_BUILD_DIR). Extra arguments go to CMake's
# configure step. ccache keys on paths relative to the checkout, so fresh clones hit the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${GPT2_BUILD_DIR:-build}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(pwd)} CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-8G}
# Precompiled headers are cacheable only with these (ccache manual, "Precompiled headers").
export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}
cmake -S . -B "$BUILD" -G Ninja -Wno-dev "$@" >"$BUILD.configure.log" 2>&1 || { cat "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" ${GPT2_BUILD_TARGET:+--target "$GPT2_BUILD_TARGET"}
