#!/usr/bin/env bash
# Installs NVRTC, cuobjdump and nvdisasm from PyPI wheels into .cuda-tools/ (git-ignored), so
# kernels can be compiled and disassembled on a machine without a GPU or a CUDA toolkit:
#   LD_LIBRARY_PATH=$PWD/.cuda-tools/lib vtensor kernels compile --out /tmp/cubins
#   PATH=$PWD/.cuda-tools/bin:$PATH cuobjdump -sass /tmp/cubins/*.cubin
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cuda-tools
mkdir -p "$dest/wheels" "$dest/lib" "$dest/bin"
for package in "nvidia-cuda-nvrtc==13.0.*" nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm; do
  python3 -m pip download --quiet --no-deps -d "$dest/wheels" "$package"
done
for wheel in "$dest"/wheels/*.whl; do
  python3 -m zipfile -e "$wheel" "$dest/unpacked"
done
find "$dest/unpacked" -name 'libnvrtc*.so*' -exec cp -f {} "$dest/lib/" \;
find "$dest/unpacked" -type f \( -name cuobjdump -o -name nvdisasm \) -exec cp -f {} "$dest/bin/" \;
chmod +x "$dest"/bin/*
echo "LD_LIBRARY_PATH=$PWD/$dest/lib  PATH=$PWD/$dest/bin:\$PATH"
