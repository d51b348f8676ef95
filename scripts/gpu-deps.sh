#!/usr/bin/env bash
# The Debian 12 libraries gpt2d builds against, unpacked into .gpu-deps/root, and the GPT-2
# vocabulary, for a machine that has a compiler, CMake, CUDA and torch but no Debian -dev packages
# and no network: the lent GPU machine (docs/gpu.md). Run here (it downloads the .debs); the
# device tool carries .gpu-deps with the working tree (run(carry=[".gpu-deps"])), and
# scripts/gpu-check.sh builds against it there.
#
# Only what the build needs: headers, shared libraries, CMake/pkg-config files, protoc and the gRPC
# plugin, pkgconf. Static archives (but GoogleTest's) and documentation are dropped to stay inside
# the 64 MiB the tool carries.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.gpu-deps
PACKAGES=(
  # the -dev packages scripts/setup.sh installs that the build reads (headers, CMake and pkg-config files)
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libcli11-dev libsqlite3-dev libpcre2-dev nlohmann-json3-dev libyaml-cpp-dev libgloo-dev
  libjemalloc-dev libcpp-httplib-dev libboost1.74-dev libre2-dev libc-ares-dev libssl-dev zlib1g-dev libbrotli-dev
  # what prometheus-cpp's CMake package looks for (its pull and push parts: civetweb, curl)
  libcivetweb-dev libcivetweb1 civetweb libcurl4-openssl-dev libcurl4 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0
  # the shared libraries our binaries load (ldd of gpt2-worker, gpt2d, gpt2ctl and the tests) and protoc's
  libabsl20220623 libbrotli1 libc-ares2 libcpp-httplib0.11 libgrpc++1.51 libgrpc29 libjemalloc2 libpcre2-8-0
  libprometheus-cpp-core1.0 libprotobuf32 libprotoc32 libre2-9 libsqlite3-0 libyaml-cpp0.7
  # what the -dev packages' .so links point at
  zlib1g libssl3 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libprotobuf-lite32
  # pkg-config itself (CMake's FindPkgConfig), for a machine without one
  pkgconf pkgconf-bin libpkgconf3
)
rm -rf "$OUT"
mkdir -p "$OUT/debs" "$OUT/root"
(cd "$OUT/debs" && apt-get download -qq "${PACKAGES[@]}")
for deb in "$OUT"/debs/*.deb; do dpkg-deb -x "$deb" "$OUT/root"; done
rm -rf "$OUT/debs" "$OUT"/root/usr/share/{doc,man,lintian,bug}
# Static archives go, but GoogleTest's: its CMake package insists that they exist (1 MiB).
find "$OUT/root" -name '*.a' ! -name 'libgtest*.a' ! -name 'libgmock*.a' -delete
# Boost is most of the size and header-only here: keep the headers our build read (the compiler's
# dependency records in build/, which scripts/build.sh made), drop the rest.
if [[ -f build/build.ninja ]]; then
  ninja -C build -t deps | awk '$1 ~ "^/usr/include/boost/" {print substr($1, 14)}' | sort -u >"$OUT/boost-headers"
  mv "$OUT/root/usr/include/boost" "$OUT/boost-all"
  (cd "$OUT/boost-all" && while read -r h; do mkdir -p "../root/usr/include/$(dirname "$h")"; cp "${h#boost/}" "../root/usr/include/$h"; done <"../boost-headers")
  rm -rf "$OUT/boost-all" "$OUT/boost-headers"
fi
# Absolute symlinks (/usr/lib/... -> the build machine's) would point outside the tree: relink.
find "$OUT/root" -type l | while read -r link; do
  target=$(readlink "$link")
  if [[ $target == /* ]]; then
    ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$OUT/root$target")" "$link"
  fi
done
# The vocabulary: not in git (scripts/setup.sh fetches it), so it travels here; gpu-check.sh puts it
# in assets/ there.
cp assets/gpt2.tiktoken "$OUT/gpt2.tiktoken"
du -sh "$OUT"
