#!/usr/bin/env bash
# Installs what building, serving and testing need, skipping what is already there.
#   Scripts/install-deps.sh          system packages for building and serving
#   Scripts/install-deps.sh --test   also the test tools (h2load, grpcio, buf, tansu, ...)
set -euo pipefail

apt_packages=(pkg-config libnghttp2-dev librdkafka-dev libcurl4-openssl-dev libsqlite3-dev zlib1g-dev)
pip_packages=()
if [[ "${1:-}" == "--test" ]]; then
    apt_packages+=(protobuf-compiler grpc-proto nghttp2-client nghttp2-server curl procps)
    pip_packages+=(pytest grpcio grpcio-tools grpcio-health-checking grpcio-reflection grpcio-status
        googleapis-common-protos buf-bin)
fi

missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ((${#pip_packages[@]})); then
    python3 -m pip install -q --disable-pip-version-check "${pip_packages[@]}" 2>&1 \
        | grep -v "Running pip as the 'root' user" || true
fi

command -v swift >/dev/null || { echo "swift (6.0 or newer) is not on PATH: install a Swift toolchain from swift.org" >&2; exit 1; }
