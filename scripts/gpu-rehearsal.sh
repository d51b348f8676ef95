#!/usr/bin/env bash
# The GPU check rehearsed on a CPU machine (docs/gpu.md, "Rehearsal"): the lent GPU machine as
# closely as we can build it here, so that what can fail there without a GPU fails here first.
#
#   scripts/gpu-deps.sh && scripts/gpu-rehearsal.sh     # ~6 GB of downloads the first time; ~15 min on 2 cores
#
# - A Debian 13 root (debootstrap): a newer compiler (g++ 14), glibc and libstdc++ than ours, CMake
#   and ninja, a Python venv with the lent machine's torch (2.11, CUDA 13 build) and transformers;
#   no Debian -dev packages, no pkg-config, no ccache.
# - The CUDA toolkit bound in at /usr/local/cuda, as there.
# - The working tree copied as the device tool carries it (tracked and untracked-but-not-ignored
#   files) with .gpu-deps.
# Then, inside it: scripts/gpu-check.sh --rehearse, the lent machine's build and then the checks on
# the CPU with the binaries it built (gpu_check.py --device cpu --small).
# Not part of scripts/test.sh: it downloads torch a second time and builds from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
SIM=${GPT2_REHEARSAL_DIR:-/var/tmp/gpt2d-rehearsal}
ROOT=$SIM/root
TORCH=${GPT2_REHEARSAL_TORCH:-2.11.0}
[[ -d .gpu-deps/root ]] || { echo "rehearsal: no .gpu-deps (scripts/gpu-deps.sh first)" >&2; exit 1; }
[[ -x /usr/local/cuda/bin/nvcc ]] || { echo "rehearsal: no CUDA toolkit at /usr/local/cuda" >&2; exit 1; }

# Binds left by an earlier run that was killed: undone first, so that nothing below ever removes
# files through a bind (rm also stays on one file system).
awk -v r="$ROOT/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
mounted=()
cleanup() { for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" || true; done; }
trap cleanup EXIT
bind() { mkdir -p "$ROOT$2" && mount --bind "$1" "$ROOT$2" && mounted+=("$ROOT$2"); }

if [[ ! -x $ROOT/opt/venv/bin/python ]]; then
  mirror=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -n1)
  [[ -n $mirror ]] || mirror=$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -n1)
  rm -rf --one-file-system "$ROOT" && mkdir -p "$SIM"
  echo "rehearsal: debootstrap trixie from $mirror" >&2
  debootstrap --variant=minbase --include=g++,cmake,ninja-build,ca-certificates,python3,python3-venv,python3-dev \
    trixie "$ROOT" "$mirror" >"$SIM/debootstrap.log" 2>&1 || { tail -20 "$SIM/debootstrap.log" >&2; exit 1; }
  # This machine's extra certificate authorities and resolver, for pip inside the root.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates >/dev/null
  fi
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  echo "rehearsal: torch $TORCH and transformers into the root's /opt/venv" >&2
  chroot "$ROOT" python3 -m venv /opt/venv
  [[ -d /root/.cache/pip ]] && bind /root/.cache/pip /root/.cache/pip  # this machine's wheels, if cached
  chroot "$ROOT" env PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/venv/bin/pip install -q \
    "torch==$TORCH" transformers==5.23.0 pyyaml numpy safetensors
fi

# The tree as the device tool carries it, and .gpu-deps.
rm -rf --one-file-system "$ROOT/work" && mkdir -p "$ROOT/work/tree"
{ git ls-files -z --cached --others --exclude-standard; find .gpu-deps -print0; } |
  tar --null --no-recursion -c -T - | tar -C "$ROOT/work/tree" -x

bind /proc /proc
bind /dev /dev
bind /usr/local/cuda /usr/local/cuda
mount -o remount,bind,ro "$ROOT/usr/local/cuda"

inside() { chroot "$ROOT" env -i HOME=/root PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  OUT=/work/out bash -c "mkdir -p /work/out && cd /work/tree && $1"; }
# gpu-check.sh's own build, and its checks with --device cpu --small on the binaries it built:
# this torch, those libraries, the run path it set.
set +e
inside "scripts/gpu-check.sh --rehearse" 2>&1 | tee "$SIM/gpu-check.log"
set -e
grep -q '^PASS build' "$SIM/gpu-check.log" || { echo "rehearsal: FAIL, the build (logs in $ROOT/work/out)"; exit 1; }
grep -q 'passed; report' "$SIM/gpu-check.log" && ! grep -q '^FAIL' "$SIM/gpu-check.log" ||
  { echo "rehearsal: FAIL (report: $ROOT/work/out/gpu-check-rehearse.json)"; exit 1; }
echo "rehearsal: PASS (the build with torch $TORCH on Debian 13, and the checks on its CPU)"
