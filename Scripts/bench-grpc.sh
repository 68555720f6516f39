#!/usr/bin/env bash
# Unary throughput of GRPCWire against nghttpd serving a static body of the same size.
#
# Builds the interop server in release mode, starts it (one event loop thread) and nghttpd
# (one thread), and runs the same h2load command against each: UnaryCall asking for a
# ~200-byte response, and nghttpd's copy of exactly that response body. Prints both req/s and
# the ratio. h2load only checks the HTTP status, so the interop server runs with --stats and
# reports how many calls ended OK (printed at the end), and one call is checked with nghttp -v.
#
# Environment: N (requests, 300000), C (connections, 16), M (streams per connection, 32),
# T (h2load threads, 1), ROUNDS (alternating runs per server; medians are reported, 3),
# SKIP_BUILD=1 to reuse the release binary. Each round also reports each server's CPU time per
# request (from /proc), which varies far less than req/s on a machine shared with other work.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-300000}
C=${C:-16}
M=${M:-32}
T=${T:-1}
ROUNDS=${ROUNDS:-3}

for tool in h2load nghttpd nghttp python3; do
    command -v "$tool" >/dev/null || { echo "bench-grpc: $tool not found (apt: nghttp2-client nghttp2-server)" >&2; exit 1; }
done

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    swift build -c release --product grpc-interop-server >&2
fi
bin=$(swift build -c release --show-bin-path)/grpc-interop-server

work=$(mktemp -d)
server_pid=""
nghttpd_pid=""
cleanup() {
    # Stop what this script started, by pid.
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
    [[ -n "$nghttpd_pid" ]] && kill "$nghttpd_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Pin the servers and h2load to different cores when there are at least two.
pin_server=()
pin_client=()
if command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
    pin_server=(taskset -c 0)
    pin_client=(taskset -c 1)
fi

# The request: a framed grpc.testing.SimpleRequest{response_size: 195}. Field 2 (varint):
# tag 0x10, then 195 as a varint (0xC3 0x01).
printf '\x00\x00\x00\x00\x03\x10\xc3\x01' > "$work/req.bin"
path=/grpc.testing.TestService/UnaryCall

"${pin_server[@]}" "$bin" --port 0 --threads 1 --stats > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
for _ in $(seq 100); do
    [[ -s "$work/server.out" ]] && break
    sleep 0.1
done
grpc_port=$(awk '/^listening on/ {print $3; exit}' "$work/server.out")
[[ -n "$grpc_port" ]] || { echo "bench-grpc: the interop server did not start" >&2; cat "$work/server.err" >&2; exit 1; }

# One call through nghttp: the status must be OK; its response body becomes nghttpd's file.
nghttp -v -H ':method: POST' -H 'content-type: application/grpc' -H 'te: trailers' -d "$work/req.bin" \
    "http://127.0.0.1:$grpc_port$path" > "$work/check.txt"
grep -q 'grpc-status: 0' "$work/check.txt" || { echo "bench-grpc: the check call did not end OK" >&2; cat "$work/check.txt" >&2; exit 1; }
mkdir -p "$work/docroot"
nghttp -H ':method: POST' -H 'content-type: application/grpc' -H 'te: trailers' -d "$work/req.bin" \
    "http://127.0.0.1:$grpc_port$path" > "$work/docroot/static"
body_bytes=$(stat -c %s "$work/docroot/static")

nghttpd_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${pin_server[@]}" nghttpd --no-tls -n 1 -d "$work/docroot" "$nghttpd_port" > "$work/nghttpd.log" 2>&1 &
nghttpd_pid=$!
for _ in $(seq 100); do
    nghttp "http://127.0.0.1:$nghttpd_port/static" > /dev/null 2>&1 && break
    sleep 0.1
done

cpu_ticks() {  # PID -> user+system clock ticks so far
    awk '{print $14 + $15}' "/proc/$1/stat"
}

run_h2load() {  # PID URL -> "req/s cpu-microseconds-per-request"
    local before after rate
    before=$(cpu_ticks "$1")
    "${pin_client[@]}" h2load -n "$N" -c "$C" -m "$M" -t "$T" \
        -H 'content-type: application/grpc' -H 'te: trailers' -d "$work/req.bin" "$2" > "$work/h2load.txt"
    after=$(cpu_ticks "$1")
    if ! grep -q "succeeded, 0 failed, 0 errored" <<<"$(grep '^requests:' "$work/h2load.txt")"; then
        echo "bench-grpc: h2load saw failures against $2:" >&2
        grep -E '^(requests|status codes):' "$work/h2load.txt" >&2
    fi
    rate=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$work/h2load.txt")
    python3 -c "print($rate, ($after - $before) / $(getconf CLK_TCK) * 1e6 / $N)"
}

grpc_rates=()
nghttpd_rates=()
ratios=()
grpc_cpu=()
nghttpd_cpu=()
for round in $(seq "$ROUNDS"); do
    read -r g gc <<<"$(run_h2load "$server_pid" "http://127.0.0.1:$grpc_port$path")"
    read -r s sc <<<"$(run_h2load "$nghttpd_pid" "http://127.0.0.1:$nghttpd_port/static")"
    r=$(python3 -c "print(f'{$g / $s:.2f}')")
    printf 'round %s: GRPCWire %.0f req/s (%.2f us CPU/req), nghttpd %.0f req/s (%.2f us CPU/req), ratio %s\n' \
        "$round" "$g" "$gc" "$s" "$sc" "$r" >&2
    grpc_rates+=("$g"); nghttpd_rates+=("$s"); ratios+=("$r"); grpc_cpu+=("$gc"); nghttpd_cpu+=("$sc")
done

# Stop the gRPC server gracefully so it prints its status counts.
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
calls=$(grep '^calls:' "$work/server.err" || echo "calls: unknown")
expected=$(( N * ROUNDS + 2 ))

median() { python3 -c "import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

echo "h2load -n $N -c $C -m $M -t $T -H 'content-type: application/grpc' -H 'te: trailers' -d req.bin (response body $body_bytes bytes)"
printf 'GRPCWire (grpc-interop-server UnaryCall, 1 event loop): %.0f req/s (median of %s rounds)\n' "$(median "${grpc_rates[@]}")" "$ROUNDS"
printf 'nghttpd (static %s-byte file, 1 thread):             %.0f req/s\n' "$body_bytes" "$(median "${nghttpd_rates[@]}")"
printf 'ratio (median of the per-round ratios): %.2f\n' "$(median "${ratios[@]}")"
printf 'server CPU per request: GRPCWire %.2f us, nghttpd %.2f us (medians; less sensitive to a busy machine)\n' \
    "$(median "${grpc_cpu[@]}")" "$(median "${nghttpd_cpu[@]}")"
echo "server-side statuses: $calls (expected ok=$expected)"
