#!/usr/bin/env bash
# Gathers what the runtime image holds into one self-contained tree (default build/bundle/gpt2d):
#   bin/     gpt2d, gpt2-worker, gpt2ctl (stripped of debug info) and gpt2-healthcheck
#   lib/     every shared library they load, found with ldd: torch's, the CUDA libraries of the
#            wheel's nvidia-* packages, and Debian's (gRPC, protobuf, abseil, ...), less glibc's own,
#            which the base image provides; plus what libtorch_cuda and cuDNN dlopen at run time
#   share/   the GPT-2 vocabulary
# The tree depends on nothing of the build machine but glibc >= 2.36, so the same bundle runs on the
# Debian base and on NVIDIA's Ubuntu CUDA base (deploy/Dockerfile, docs/deploy.md). Files are hard
# links where possible, so a bundle next to the build costs no disk and keeps its mtimes (Docker's
# build cache hits when nothing changed).
#
#   scripts/bundle.sh [OUT]       after scripts/build.sh; GPT2_BUILD_DIR picks the build
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${GPT2_BUILD_DIR:-build}
OUT=${1:-$BUILD/bundle/gpt2d}
BINARIES=("$BUILD/server/gpt2d" "$BUILD/worker/gpt2-worker" "$BUILD/client/gpt2ctl")
for b in "${BINARIES[@]}"; do [[ -x $b ]] || { echo "bundle: $b is missing: run scripts/build.sh" >&2; exit 1; }; done
VOCAB=assets/gpt2.tiktoken
[[ -s $VOCAB ]] || { echo "bundle: $VOCAB is missing: run scripts/setup.sh" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/lib" "$OUT/share"
# Copies or hard-links $1 to $2 (a copy when they are on different filesystems).
place() { ln -f "$1" "$2" 2>/dev/null || cp -p "$1" "$2"; }

for b in "${BINARIES[@]}"; do
  objcopy --strip-debug "$b" "$OUT/bin/$(basename "$b")"
  touch -r "$b" "$OUT/bin/$(basename "$b")"
done
cp -p deploy/healthcheck.sh "$OUT/bin/gpt2-healthcheck"
place "$VOCAB" "$OUT/share/gpt2.tiktoken"

# glibc's libraries come from the base image: they must match its dynamic loader.
is_glibc() {
  case "$1" in
    ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*|libutil.so*|libanl.so*|libnss_*|libBrokenLocale*|libmvec.so*) return 0 ;;
  esac
  return 1
}
declare -A seen=()
add_lib() {
  local path=$1 name
  name=$(basename "$path")
  is_glibc "$name" && return 0
  [[ -n ${seen[$name]:-} ]] && return 0
  seen[$name]=1
  place "$(readlink -f "$path")" "$OUT/lib/$name"
}
closure() {  # every library ldd resolves for the objects given
  ldd "$@" 2>/dev/null | awk '/=> \// {print $3}' | sort -u
}
for lib in $(closure "${BINARIES[@]}"); do add_lib "$lib"; done
missing=$(ldd "${BINARIES[@]}" | grep 'not found' || true)
[[ -z $missing ]] || { echo "bundle: unresolved libraries:"$'\n'"$missing" >&2; exit 1; }

# Loaded with dlopen, so ldd cannot see them: cuDNN's engine and operator libraries, NVRTC's
# builtins (runtime-compiled kernels) and nvJitLink. Each comes with its own closure.
SITE=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
extra=()
while IFS= read -r f; do extra+=("$f"); done < <(find "$SITE/nvidia" -name 'libcudnn*.so*' -o -name 'libnvrtc-builtins*.so*' -o -name 'libnvJitLink*.so*' | sort)
for f in "${extra[@]}"; do add_lib "$f"; done
for lib in $(closure "${extra[@]}"); do add_lib "$lib"; done

du -sh "$OUT" | awk -v out="$OUT" '{print "bundle: " out " (" $1 ")"}'
