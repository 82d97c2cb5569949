#!/usr/bin/env bash
# Installs what building and testing vit needs on Debian 12 (or a derivative).
# With --fuzz, also Clang and its libFuzzer runtime (for -DVIT_FUZZ=ON, see fuzz/).
set -euo pipefail
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
packages=(cmake g++ make pkg-config libeigen3-dev doctest-dev libstb-dev nlohmann-json3-dev
  libcli11-dev clang-format ca-certificates git dataset-fashion-mnist)
for arg in "$@"; do
  case "$arg" in
    --fuzz) packages+=(clang libclang-rt-14-dev) ;;
    *) echo "install-deps.sh: unknown argument '$arg' (expected --fuzz)" >&2; exit 2 ;;
  esac
done
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends "${packages[@]}"
