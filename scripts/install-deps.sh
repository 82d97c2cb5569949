#!/usr/bin/env bash
# Installs what building and testing vit needs on Debian 12 (or a derivative).
set -euo pipefail
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends \
  cmake g++ make pkg-config libeigen3-dev doctest-dev libstb-dev nlohmann-json3-dev \
  libcli11-dev clang-format ca-certificates git dataset-fashion-mnist
