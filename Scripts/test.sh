#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the Swift suites (units and
# integration tests that start real processes), then the Python interop and end-to-end
# suites (generated grpcio clients against the real server binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
Scripts/install-deps.sh --test

swift build --build-tests
# The per-test "started" lines are noise; failures and the summary stay.
set +e
swift test --skip-build 2>&1 | grep --line-buffered -vE "^(◇|↳)|started\.$"
status=${PIPESTATUS[0]}
set -e
if ((status != 0)); then
    echo "swift test failed (exit $status)" >&2
    exit "$status"
fi

python3 -m pytest -q Tests/python
