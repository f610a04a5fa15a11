#!/usr/bin/env bash
# Installs what Shrink needs on Debian bookworm (only what is missing), unpacks
# Fashion-MNIST into data/, then configures and builds (Release, all cores).
#   scripts/setup.sh            install + data + build
#   scripts/setup.sh --no-build install + data only
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build pkg-config
          libtorch-dev libyaml-cpp-dev libfmt-dev libopencv-dev libgtest-dev
          libcli11-dev nlohmann-json3-dev libbenchmark-dev libopenblas0 zlib1g-dev
          libgloo-dev  # headers of c10d's ProcessGroupGloo (multi-process training)
          dataset-fashion-mnist
          python3-torch)  # only for the test that loads a TorchScript file saved by PyTorch

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Fashion-MNIST: the Debian package ships the original .gz files; the IDX reader
# reads .gz directly, but unpacked copies let other tools (and torch's MNIST) use them.
src=/usr/share/datasets/fashion-mnist
dst=data/fashion-mnist
mkdir -p "$dst"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ ! -s "$dst/$f" ]; then
    if [ -f "$src/$f.gz" ]; then
      gunzip -c "$src/$f.gz" > "$dst/$f.tmp" && mv "$dst/$f.tmp" "$dst/$f"
    elif [ -f "$src/$f" ]; then
      cp "$src/$f" "$dst/$f"
    else
      echo "setup: $src/$f(.gz) not found (is dataset-fashion-mnist installed?)" >&2
      exit 1
    fi
  fi
done

[ "${1:-}" = "--no-build" ] && exit 0

build_dir=${SHRINK_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" -j "$(nproc)"

# Fashion-MNIST in the CIFAR-10 binary format, for the CIFAR loader and models (7 s, 210 MB).
if [ ! -s data/fashion-mnist-cifar/test_batch.bin ]; then
  "$build_dir/shrink" data convert configs/data/fashion_mnist.yaml --format cifar10 \
    --output data/fashion-mnist-cifar --overwrite
fi
