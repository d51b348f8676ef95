#!/usr/bin/env bash
# Installs the CUDA 13 toolkit at /usr/local/cuda when it is missing (the image's build stage; our
# machines come with it). libtorch's CMake config needs nvcc and the CUDA headers to configure even
# though nothing here runs on a GPU. The toolkit is NVIDIA's PyPI packages, pinned to the versions
# our machines carry, laid out as a toolkit: bin/, include/, lib/ (with lib64 and targets/ links).
set -euo pipefail
PREFIX=${CUDA_PREFIX:-/usr/local/cuda-13.0}
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "cuda-toolkit: /usr/local/cuda is present"
  exit 0
fi
PACKAGES=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-culibos==13.0.85 nvidia-cuda-nvrtc==13.0.88
  nvidia-cuda-cupti==13.0.85 nvidia-cuda-profiler-api==13.0.85 nvidia-nvtx==13.0.85
  nvidia-nvjitlink==13.0.88 nvidia-cublas==13.1.0.3 nvidia-cufft==12.0.0.61 nvidia-curand==10.4.0.35
  nvidia-cusolver==12.0.4.66 nvidia-cusparse==12.6.3.3 nvidia-cudnn-cu13==9.19.0.56 nvidia-nccl-cu13==2.28.9
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "cuda-toolkit: installing ${#PACKAGES[@]} NVIDIA packages from PyPI into $PREFIX"
python3 -m venv "$tmp/venv"  # a pip of its own: Debian's refuses to install outside a venv
"$tmp/venv/bin/pip" install -q --disable-pip-version-check --no-deps --target "$tmp/pkgs" "${PACKAGES[@]}"
mkdir -p "$PREFIX"
cp -a "$tmp"/pkgs/nvidia/cu13/. "$PREFIX"/
for d in cudnn nccl; do  # cuDNN and NCCL keep their own prefix in their wheels
  [[ -d $tmp/pkgs/nvidia/$d ]] && cp -a "$tmp/pkgs/nvidia/$d/." "$PREFIX"/
done
cd "$PREFIX"
[[ -e lib64 ]] || ln -s lib lib64
mkdir -p targets/x86_64-linux
ln -sfn ../../include targets/x86_64-linux/include
ln -sfn ../../lib targets/x86_64-linux/lib
# The unversioned names the linker and CMake look for.
for f in lib/lib*.so.*; do
  base=${f%%.so.*}.so
  [[ -e $base ]] || ln -s "$(basename "$f")" "$base"
done
chmod +x bin/* nvvm/bin/* 2>/dev/null || true
ln -sfn "$PREFIX" /usr/local/cuda
/usr/local/cuda/bin/nvcc --version | tail -n 2
