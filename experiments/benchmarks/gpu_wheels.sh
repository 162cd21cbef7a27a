#!/usr/bin/env bash
# Download, on a machine with a package registry, the wheels and the Fashion-MNIST images that experiments/benchmarks/gpu_check.sh
# installs on a CUDA machine that has PyTorch but no registry (Python 3.12, x86-64 Linux, as on the
# lent H200 machines; see docs/architecture.md, "GPU"). PyTorch itself is not downloaded: the
# CUDA machine's own build is used; ebrl runs from the checkout (PYTHONPATH).
#
#   bash experiments/benchmarks/gpu_wheels.sh [DEST=.gpu_wheels] [PYTHON_VERSION=3.12]
set -euo pipefail
dest=${1:-.gpu_wheels}
py=${2:-3.12}
pip=${PIP:-.venv/bin/pip}
mkdir -p "$dest"
# Pure-Python and binary wheels, without their dependencies (torch and numpy are already there).
"$pip" download --quiet --no-deps --only-binary=:all: --python-version "$py" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any --dest "$dest" \
    gymnasium==1.4.0 stable-baselines3==2.9.2 cloudpickle farama-notifications \
    mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 glfw pyopengl websockets
# Fashion-MNIST images (Debian's dataset-fashion-mnist) for the RBM epoch.
if [ ! -f "$dest/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download dataset-fashion-mnist >/dev/null && dpkg -x ./*.deb root)
    mkdir -p "$dest/fashion-mnist"
    cp "$tmp"/root/usr/share/datasets/fashion-mnist/{train,t10k}-images-idx3-ubyte.gz "$dest/fashion-mnist/"
    rm -rf "$tmp"
fi
ls -1 "$dest"
du -sh "$dest"
