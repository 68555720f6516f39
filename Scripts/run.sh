#!/usr/bin/env bash
# Installs what is missing, builds release and serves on the embedded engine:
# 127.0.0.1:50051, data in ./data. Extra arguments go to orders-server (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
Scripts/install-deps.sh
swift build -c release --product orders-server >&2
swift build -c release --product orders >&2
echo "the CLI client: $(pwd)/.build/release/orders --help" >&2
exec .build/release/orders-server "$@"
