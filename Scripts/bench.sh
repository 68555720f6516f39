#!/usr/bin/env bash
# The benchmark suite: every row in one go, a markdown table on stdout and in BENCHMARKS.md.
#
#  1. GetOrder (protobuf) under h2load, beside nghttpd serving a static body of the same size.
#  2. GetOrder with the JSON codec (application/grpc+json), beside nghttpd likewise.
#  3. PlaceOrder end to end at 1, 16, 64, 256 in flight (orders-bench, grpc-swift-2 client).
#  4. UpdateOrder (accept at version 1) the same way.
#  5. StreamEvents fan-out to 1,000 subscribers (from_end): latency and events/s delivered.
#     Subscribers use orders-bench's lean gRPC client (swift-nio-http2 frames, gRPC framing,
#     decodes only created_date/command_id), since grpc-swift-2 costs ~35 µs of client CPU
#     per message; STREAM_CLIENT=grpc-swift measures with grpc-swift-2 subscribers instead.
#  6. Restart with 1M events stored (time to health SERVING), RSS with 1M events and with
#     10,000 idle HTTP/2 connections.
#  7. Kafka engine rows (run only when `orders-server --engine kafka` works).
#  8. The same GetOrder served by a grpc-swift-2 server (Benchmarks/grpc-swift-peer).
#
# Servers are pinned to core 0 and load generators to core 1 (taskset), as in
# Scripts/bench-grpc.sh. Throughput rows are medians over ROUNDS alternating rounds, and
# ratios are medians of per-round ratios (each ratio measured in the same round).
#
# Environment (defaults in brackets): N [300000] C [16] M [32] T [1] for h2load; ROUNDS [3];
# LOAD_SECONDS [8] per PlaceOrder/UpdateOrder level; STREAM_SUBSCRIBERS [1000];
# STREAM_RATES ["2 10"] orders/s, one row each; STREAM_SECONDS [10]; STREAM_CLIENT [lean] or grpc-swift; FILL_EVENTS [1000000]; IDLE [10000];
# RESTARTS [3]; ROWS ["1 3 5 6 7": row blocks to run; 1 also runs 2 and 8, 3 also 4]; SKIP_BUILD=1 reuses the release binaries; OUT [BENCHMARKS.md].
# Row 6's data directory (FILL_EVENTS events, ~10 minutes to fill on 2 cores) is kept in
# Benchmarks/.build/bench-fill-FILL_EVENTS (KEEP_FILL=DIR elsewhere) and reused by later runs;
# REFILL=1 fills it again.
set -euo pipefail
cd "$(dirname "$0")/.."
# ROWS ["1 3 5 6 7"]: which blocks run (1 = rows 1, 2, 8; 3 = rows 3, 4; 5; 6; 7).
want() { [[ " ${ROWS:-1 3 5 6 7} " == *" $1 "* ]]; }
root=$(pwd)

N=${N:-300000}
C=${C:-16}
M=${M:-32}
T=${T:-1}
ROUNDS=${ROUNDS:-3}
LOAD_SECONDS=${LOAD_SECONDS:-8}
LEVELS=${LEVELS:-"1 16 64 256"}
STREAM_SUBSCRIBERS=${STREAM_SUBSCRIBERS:-1000}
STREAM_RATES=${STREAM_RATES:-"2 10"}
STREAM_SECONDS=${STREAM_SECONDS:-10}
STREAM_CLIENT=${STREAM_CLIENT:-lean}
FILL_EVENTS=${FILL_EVENTS:-1000000}
IDLE=${IDLE:-10000}
RESTARTS=${RESTARTS:-3}
OUT=${OUT:-BENCHMARKS.md}

for tool in h2load nghttpd nghttp python3 taskset; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found (apt: nghttp2-client nghttp2-server util-linux)" >&2; exit 1; }
done

# 10,000 idle connections need more than 10,000 descriptors in the server and the client.
ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < IDLE + 1000 )); then
    echo "bench: ulimit -n is $(ulimit -n) (hard limit); IDLE=$IDLE needs more" >&2
    exit 1
fi

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    swift build -c release >&2
    swift build -c release --package-path Benchmarks >&2
fi
bin=$(swift build -c release --show-bin-path)
bbin=$(swift build -c release --package-path Benchmarks --show-bin-path)
server_bin=$bin/orders-server
bench_bin=$bbin/orders-bench
peer_bin=$bbin/grpc-swift-peer
load_bin=$bin/pipeline-load

started=$SECONDS
work=$(mktemp -d)
pids=()
cleanup() {
    # Stop what this script started, by pid.
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

pin_server=()
pin_client=()
if [[ $(nproc) -ge 2 ]]; then
    pin_server=(taskset -c 0)
    pin_client=(taskset -c 1)
fi
log() { echo "bench: $*" >&2; }
median() { python3 -c "import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
fmt() { python3 -c "import sys; print(format(float(sys.argv[1]), sys.argv[2]))" "$1" "$2"; }
kv() {  # KEY LINE -> the value of KEY=value in LINE
    tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {print substr($0, length(k) + 2); exit}'
}
ms() { kv "$1" "$2" | sed 's/ms$//'; }  # KEY LINE -> the value without its "ms" unit
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_mb() { awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
err_note() {  # LINE -> ", N errors (kinds)" when the line counts errors
    local e; e=$(kv errors "$1")
    if [[ -n "$e" && "$e" != 0 ]]; then echo ", $e errors ($(kv error-kinds "$1"))"; fi
    return 0
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# start_server NAME DATA_DIR -> sets server_pid, server_port; waits for health SERVING.
start_server() {  # NAME DATA-DIR [more orders-server flags]
    local name=$1 dir=$2
    shift 2
    "${pin_server[@]}" "$server_bin" --listen 127.0.0.1:0 --data-dir "$dir" --log-level warning "$@" \
        > "$work/$name.out" 2> "$work/$name.err" &
    server_pid=$!
    pids+=("$server_pid")
    for _ in $(seq 600); do
        [[ -s "$work/$name.out" ]] && break
        sleep 0.05
    done
    server_port=$(awk '/listening on port/ {print $5; exit}' "$work/$name.out")
    [[ -n "$server_port" ]] || { log "orders-server ($name) did not start"; cat "$work/$name.err" >&2; exit 1; }
    wait_serving "$server_port" 120 || { log "orders-server ($name) never became SERVING"; exit 1; }
}
stop_server() {
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}

# grpc.health.v1.Health/Check{service: ""}; SERVING is the framed message 08 01.
printf '\x00\x00\x00\x00\x00' > "$work/health.bin"
is_serving() {
    nghttp -H ':method: POST' -H 'content-type: application/grpc' -H 'te: trailers' -d "$work/health.bin" \
        "http://127.0.0.1:$1/grpc.health.v1.Health/Check" 2>/dev/null | od -An -tx1 | tr -d ' \n' | grep -qx '00000000020801'
}
wait_serving() {  # PORT SECONDS
    local until=$(( $(date +%s) + $2 ))
    while (( $(date +%s) < until )); do
        is_serving "$1" && return 0
        sleep 0.01
    done
    return 1
}

rows=()  # markdown rows: | # | measure | result | goal | command |
row() { rows+=("| $1 | $2 | $3 | $4 | $5 |"); }
goals=()

# ---------------------------------------------------------------------------------------------
if want 1; then
# Rows 1, 2, 8: GetOrder (protobuf, JSON) vs nghttpd vs the grpc-swift-2 peer, same h2load flags.
log "rows 1, 2, 8: GetOrder under h2load -n $N -c $C -m $M -t $T, $ROUNDS rounds"
start_server get "$work/data-get"
get_pid=$server_pid
get_port=$server_port
"${pin_client[@]}" "$bench_bin" seed --target "127.0.0.1:$get_port" --out-dir "$work" > "$work/seed.out"
order_id=$(kv order_id "$(cat "$work/seed.out")")
path=/ridehailing.orders.v1.OrderService/GetOrder

# One call per codec through nghttp -v: it must end with grpc-status 0; its body is nghttpd's file.
mkdir -p "$work/docroot"
check_call() {  # PORT CONTENT-TYPE REQUEST-FILE BODY-OUT
    nghttp -v -H ':method: POST' -H "content-type: $2" -H 'te: trailers' -d "$3" "http://127.0.0.1:$1$path" > "$work/check.txt"
    grep -aq 'grpc-status: 0' "$work/check.txt" || { log "GetOrder check ($2) did not end OK"; cat "$work/check.txt" >&2; exit 1; }
    nghttp -H ':method: POST' -H "content-type: $2" -H 'te: trailers' -d "$3" "http://127.0.0.1:$1$path" > "$4"
}
check_call "$get_port" application/grpc "$work/get-proto.bin" "$work/docroot/proto"
check_call "$get_port" application/grpc+json "$work/get-json.bin" "$work/docroot/json"
proto_bytes=$(stat -c %s "$work/docroot/proto")
json_bytes=$(stat -c %s "$work/docroot/json")

nghttpd_port=$(free_port)
"${pin_server[@]}" nghttpd --no-tls -n 1 -d "$work/docroot" "$nghttpd_port" > "$work/nghttpd.log" 2>&1 &
nghttpd_pid=$!
pids+=("$nghttpd_pid")
"${pin_server[@]}" "$peer_bin" --port 0 --threads 1 --order-file "$work/order.pb" > "$work/peer.out" 2> "$work/peer.err" &
peer_pid=$!
pids+=("$peer_pid")
for _ in $(seq 200); do
    [[ -s "$work/peer.out" ]] && nghttp "http://127.0.0.1:$nghttpd_port/proto" > /dev/null 2>&1 && break
    sleep 0.05
done
peer_port=$(awk '/listening on port/ {print $5; exit}' "$work/peer.out")
[[ -n "$peer_port" ]] || { log "grpc-swift-peer did not start"; cat "$work/peer.err" >&2; exit 1; }
check_call "$peer_port" application/grpc "$work/get-proto.bin" "$work/peer-body"
peer_bytes=$(stat -c %s "$work/peer-body")
[[ "$peer_bytes" == "$proto_bytes" ]] || log "warning: the peer's body is $peer_bytes bytes, orders-server's $proto_bytes"

# run_h2load NAME PID URL CONTENT-TYPE REQUEST-FILE BODY-BYTES -> "req/s server-cpu-us-per-request"
# Fails the row (prints "fail") unless every request succeeded and carried exactly one full
# response body: a gRPC error is a trailers-only response with no DATA, so the DATA byte count
# (h2load's "traffic: … data") proves that every call returned the order.
h2load_cmd() { echo "h2load -n $N -c $C -m $M -t $T -H 'content-type: $1' -H 'te: trailers' -d $2 $3"; }
run_h2load() {
    local name=$1 pid=$2 url=$3 ctype=$4 req=$5 body=$6 before after out rate data ok
    out="$work/h2load-$name.txt"
    before=$(cpu_ticks "$pid")
    "${pin_client[@]}" h2load -n "$N" -c "$C" -m "$M" -t "$T" -H "content-type: $ctype" -H 'te: trailers' \
        -d "$req" "$url" > "$out"
    after=$(cpu_ticks "$pid")
    rate=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$out")
    data=$(awk '/^traffic:/ {for (i = 1; i <= NF; i++) if ($i == "data") {gsub(/[()]/, "", $(i - 1)); print $(i - 1)}}' "$out")
    ok=1
    grep -q "^requests: .* $N succeeded, 0 failed, 0 errored" "$out" || ok=0
    [[ "$data" == $(( N * body )) ]] || ok=0
    if (( ok == 0 )); then
        log "h2load against $name: not every request returned the full body (data $data, expected $(( N * body )))"
        grep -E '^(requests|status codes|traffic):' "$out" >&2
        echo "fail 0"
        return
    fi
    python3 -c "print($rate, ($after - $before) / $(getconf CLK_TCK) * 1e6 / $N)"
}

declare -A rate cpu
names=(get-proto nghttpd-proto peer get-json nghttpd-json)
ratio_ng=(); ratio_peer=(); ratio_json_ng=()
failed_h2load=0
for round in $(seq "$ROUNDS"); do
    for name in "${names[@]}"; do
        case $name in
            get-proto)     args=("$get_pid" "http://127.0.0.1:$get_port$path" application/grpc "$work/get-proto.bin" $(( proto_bytes ))) ;;
            nghttpd-proto) args=("$nghttpd_pid" "http://127.0.0.1:$nghttpd_port/proto" application/grpc "$work/get-proto.bin" $(( proto_bytes ))) ;;
            peer)          args=("$peer_pid" "http://127.0.0.1:$peer_port$path" application/grpc "$work/get-proto.bin" $(( proto_bytes ))) ;;
            get-json)      args=("$get_pid" "http://127.0.0.1:$get_port$path" application/grpc+json "$work/get-json.bin" $(( json_bytes ))) ;;
            nghttpd-json)  args=("$nghttpd_pid" "http://127.0.0.1:$nghttpd_port/json" application/grpc+json "$work/get-json.bin" $(( json_bytes ))) ;;
        esac
        read -r r c <<<"$(run_h2load "$name" "${args[@]}")"
        [[ "$r" == fail ]] && { failed_h2load=1; r=0; }
        rate[$name,$round]=$r; cpu[$name,$round]=$c
    done
    g=${rate[get-proto,$round]}; s=${rate[nghttpd-proto,$round]}; p=${rate[peer,$round]}
    j=${rate[get-json,$round]}; sj=${rate[nghttpd-json,$round]}
    ratio_ng+=("$(python3 -c "print($g / $s if $s else 0)")")
    ratio_peer+=("$(python3 -c "print($g / $p if $p else 0)")")
    ratio_json_ng+=("$(python3 -c "print($j / $sj if $sj else 0)")")
    log "round $round: GetOrder $(fmt "$g" .0f), nghttpd $(fmt "$s" .0f), peer $(fmt "$p" .0f), GetOrder JSON $(fmt "$j" .0f), nghttpd (JSON size) $(fmt "$sj" .0f) req/s"
done
med_rate() { local v=(); for r in $(seq "$ROUNDS"); do v+=("${rate[$1,$r]}"); done; median "${v[@]}"; }
med_cpu() { local v=(); for r in $(seq "$ROUNDS"); do v+=("${cpu[$1,$r]}"); done; median "${v[@]}"; }
get_rate=$(med_rate get-proto)
r_ng=$(median "${ratio_ng[@]}"); r_peer=$(median "${ratio_peer[@]}"); r_json=$(median "${ratio_json_ng[@]}")

# Every GetOrder call answered OK? One more nghttp -v each, after the load.
status_note="grpc-status 0 checked with nghttp -v before and after; every h2load response carried the full body (DATA bytes = n × body)"
nghttp -v -H ':method: POST' -H 'content-type: application/grpc' -H 'te: trailers' -d "$work/get-proto.bin" \
    "http://127.0.0.1:$get_port$path" | grep -aq 'grpc-status: 0' || { status_note="grpc-status check after the load FAILED"; failed_h2load=1; }
(( failed_h2load )) && status_note="$status_note; SOME h2load RUNS FAILED (see log)"
kill "$nghttpd_pid" "$peer_pid" 2>/dev/null || true
stop_server

row 1 "GetOrder, protobuf (\`application/grpc\`), $proto_bytes-byte response" \
    "**$(fmt "$get_rate" .0f) req/s** ($(fmt "$(med_cpu get-proto)" .1f) µs server CPU/req); nghttpd static $proto_bytes-byte body: $(fmt "$(med_rate nghttpd-proto)" .0f) req/s ($(fmt "$(med_cpu nghttpd-proto)" .1f) µs/req); **ratio $(fmt "$r_ng" .2f)** (by server CPU per request: $(fmt "$(python3 -c "print($(med_cpu nghttpd-proto) / $(med_cpu get-proto))")" .2f)). $status_note" \
    "≥ 0.5 × nghttpd" "\`$(h2load_cmd application/grpc get-proto.bin "http://127.0.0.1:P$path")\`; nghttpd: \`nghttpd --no-tls -n 1 -d docroot P\` with the same h2load flags on \`/proto\`"
goals+=("GetOrder / nghttpd ≥ 0.5: $(python3 -c "print('met' if $r_ng >= 0.5 else 'NOT met')") ($(fmt "$r_ng" .2f))")
row 2 "GetOrder, JSON codec (\`application/grpc+json\`), $json_bytes-byte response" \
    "**$(fmt "$(med_rate get-json)" .0f) req/s** ($(fmt "$(med_cpu get-json)" .1f) µs server CPU/req); nghttpd static $json_bytes-byte body: $(fmt "$(med_rate nghttpd-json)" .0f) req/s; ratio $(fmt "$r_json" .2f)" \
    "—" "\`$(h2load_cmd application/grpc+json get-json.bin "http://127.0.0.1:P$path")\`"
row 8 "GetOrder served by grpc-swift-2 2.4 (+ nio-transport 2.9, protobuf 2.4; 1 event loop, hand-registered method, fixed $peer_bytes-byte Order)" \
    "$(fmt "$(med_rate peer)" .0f) req/s ($(fmt "$(med_cpu peer)" .1f) µs server CPU/req); **orders-server / peer = $(fmt "$r_peer" .2f)** (by server CPU per request: $(fmt "$(python3 -c "print($(med_cpu peer) / $(med_cpu get-proto))")" .2f))" \
    "≥ 10" "\`grpc-swift-peer --port P --threads 1 --order-file order.pb\`; same h2load command as row 1"
goals+=("GetOrder / grpc-swift-2 peer ≥ 10: $(python3 -c "print('met' if $r_peer >= 10 else 'NOT met')") ($(fmt "$r_peer" .2f))")
fi  # row 1

# ---------------------------------------------------------------------------------------------
if want 3; then
# Rows 3 and 4: PlaceOrder and UpdateOrder(accept) end to end.
log "rows 3, 4: PlaceOrder and UpdateOrder at $LEVELS in flight, $LOAD_SECONDS s each"
start_server write "$work/data-write"
declare -A place_rate
place_cells=(); accept_cells=()
for n in $LEVELS; do
    line=$("${pin_client[@]}" "$bench_bin" place --target "127.0.0.1:$server_port" --in-flight "$n" --seconds "$LOAD_SECONDS" --warmup 1)
    log "$line"
    place_rate[$n]=$(kv commands/s "$line")
    place_cells+=("$n: **$(kv commands/s "$line")/s**, p50 $(ms p50 "$line") ms, p99 $(ms p99 "$line") ms, p99.9 $(ms p99.9 "$line") ms (client $(kv client-cores "$line") cores)$(err_note "$line")")
    if [[ $n == 64 ]]; then place64=$line; fi
done
for n in $LEVELS; do
    # Enough orders for the measured seconds at this level's PlaceOrder rate, plus a margin.
    orders=$(python3 -c "print(max(200, int(${place_rate[$n]} * $LOAD_SECONDS * 1.3)))")
    line=$("${pin_client[@]}" "$bench_bin" accept --target "127.0.0.1:$server_port" --in-flight "$n" --seconds "$LOAD_SECONDS" --orders "$orders")
    log "$line"
    accept_cells+=("$n: **$(kv commands/s "$line")/s**, p50 $(ms p50 "$line") ms, p99 $(ms p99 "$line") ms, p99.9 $(ms p99.9 "$line") ms ($(kv commands "$line") of $(kv orders "$line") orders in $(kv seconds "$line") s; client $(kv client-cores "$line") cores)$(err_note "$line")")
done
stop_server
place_joined=$(printf '%s; ' "${place_cells[@]}"); place_joined=${place_joined%; }
accept_joined=$(printf '%s; ' "${accept_cells[@]}"); accept_joined=${accept_joined%; }
row 3 "PlaceOrder end to end (durable, outcome returned), fresh request_id each; by in-flight calls" \
    "$place_joined" "at 64: ≥ 0.25 × GetOrder, p99 ≤ 10 ms" \
    "\`orders-bench place --target 127.0.0.1:P --in-flight N --seconds $LOAD_SECONDS --warmup 1\` (1 connection per 32 in flight)"
row 4 "UpdateOrder (accept at version 1) end to end; orders placed first, unmeasured" \
    "$accept_joined" "—" \
    "\`orders-bench accept --target 127.0.0.1:P --in-flight N --seconds $LOAD_SECONDS --orders ⌈1.3 × PlaceOrder/s × $LOAD_SECONDS⌉\`"
if [[ -n "${place64:-}" && -n "${get_rate:-}" ]]; then
    p64=$(kv commands/s "$place64"); p99_64=$(ms p99 "$place64")
    pr=$(python3 -c "print($p64 / $get_rate)")
    goals+=("PlaceOrder / GetOrder ≥ 0.25 at 64 in flight: $(python3 -c "print('met' if $pr >= 0.25 else 'NOT met')") ($(fmt "$p64" .0f) / $(fmt "$get_rate" .0f) = $(fmt "$pr" .3f))")
    goals+=("PlaceOrder p99 ≤ 10 ms at 64 in flight: $(python3 -c "print('met' if $p99_64 <= 10 else 'NOT met')") ($p99_64 ms)")
fi
fi  # row 3

# ---------------------------------------------------------------------------------------------
if want 5; then
# Row 5: StreamEvents fan-out, at each publishing rate, on a fresh server each.
for srate in $STREAM_RATES; do
    log "row 5: StreamEvents, $STREAM_SUBSCRIBERS subscribers, $srate orders/s for $STREAM_SECONDS s"
    start_server "stream-$srate" "$work/data-stream-$srate"
    before=$(cpu_ticks "$server_pid")
    line=$("${pin_client[@]}" "$bench_bin" stream --target "127.0.0.1:$server_port" --subscribers "$STREAM_SUBSCRIBERS" \
        --rate "$srate" --seconds "$STREAM_SECONDS" --client "$STREAM_CLIENT")
    after=$(cpu_ticks "$server_pid")
    log "$line"
    stream_rss=$(rss_mb "$server_pid")
    stop_server
    busy=$(python3 -c "print(($after - $before) / $(getconf CLK_TCK) / max(0.001, $(kv window "$line" | tr -d s)))")
    per_delivery=$(python3 -c "print(($after - $before) / $(getconf CLK_TCK) * 1e6 / max(1, $(kv delivered "$line")))")
    sp99=$(kv append-p99 "$line")
    sendp99=$(kv send-p99 "$line")
    row 5 "StreamEvents fan-out: $STREAM_SUBSCRIBERS subscribers (\`from_end\`), $srate PlaceOrder/s for $STREAM_SECONDS s (target $(( STREAM_SUBSCRIBERS * ${srate%.*} )) deliveries/s)" \
        "delivered $(kv delivered "$line") of $(kv expected "$line") (per subscriber $(kv per-subscriber "$line")) in $(kv window "$line"), **$(fmt "$(kv events/s "$line")" .0f) events/s**; event created_date → receipt: p50 $(kv append-p50 "$line") ms, **p99 ${sp99} ms**, p99.9 $(kv append-p99.9 "$line") ms; client send → receipt: p50 $(kv send-p50 "$line") ms, p99 ${sendp99} ms; server CPU $(fmt "$busy" .2f) cores busy, $(fmt "$per_delivery" .1f) µs per delivery; client $(kv client-cores "$line") cores; RSS after: $stream_rss MB; errors: publish $(kv publish-errors "$line"), streams $(kv stream-errors "$line")" \
        "p99 ≤ 50 ms" \
        "\`orders-bench stream --target 127.0.0.1:P --subscribers $STREAM_SUBSCRIBERS --rate $srate --seconds $STREAM_SECONDS --client $STREAM_CLIENT\` (50 subscribers per connection; $(if [[ $STREAM_CLIENT == lean ]]; then echo 'lean subscriber client: swift-nio-http2 frames, gRPC framing, decodes created_date and command_id only; publisher grpc-swift-2'; else echo 'grpc-swift-2 subscribers and publisher'; fi))"
    goals+=("StreamEvents $STREAM_SUBSCRIBERS subscribers p99 ≤ 50 ms at $srate orders/s: $(python3 -c "print('met' if ${sp99:-1e9} <= 50 else 'NOT met')") (created_date → receipt p99 ${sp99} ms; send → receipt p99 ${sendp99} ms)")
done
fi  # row 5

# ---------------------------------------------------------------------------------------------
if want 6; then
# Row 6: restart with FILL_EVENTS events stored; RSS; idle connections.
fill_dir=${KEEP_FILL:-$root/Benchmarks/.build/bench-fill-$FILL_EVENTS}
fill_note=""
if [[ "${REFILL:-0}" != 1 && -f "$fill_dir/.filled" ]]; then
    log "row 6: reusing $fill_dir ($FILL_EVENTS events)"
    fill_note="The data directory was filled by an earlier run and reused ($(cat "$fill_dir/.filled"))."
else
    log "row 6: filling $FILL_EVENTS events with pipeline-load"
    rm -rf "$fill_dir"; mkdir -p "$fill_dir"
    t0=$(date +%s.%N)
    fill_line=$("$load_bin" --data-dir "$fill_dir" --in-flight 512 --seconds 3600 --commands "$FILL_EVENTS")
    t1=$(date +%s.%N)
    log "$fill_line"
    fill_note="filled in $(fmt "$(python3 -c "print($t1 - $t0)")" .0f) s at commit $(git rev-parse --short HEAD 2>/dev/null): $fill_line"
    echo "$fill_note" > "$fill_dir/.filled"
    fill_note="Filled by this run: ${fill_note#filled }."
fi
fill_size=$(du -sm "$fill_dir" | cut -f1)
restart_times=()
port=$(free_port)
# restart_once LABEL -> appends the seconds from exec to health SERVING to restart_times
restart_once() {
    local t0 t1
    t0=$(date +%s%N)
    "${pin_server[@]}" "$server_bin" --listen "127.0.0.1:$port" --data-dir "$fill_dir" --log-level warning \
        > "$work/restart.out" 2> "$work/restart.err" &
    server_pid=$!
    pids+=("$server_pid")
    wait_serving "$port" 300 || { log "restart ($1): never SERVING"; cat "$work/restart.err" >&2; exit 1; }
    t1=$(date +%s%N)
    restart_times+=("$(python3 -c "print(($t1 - $t0) / 1e9)")")
    log "restart ($1): SERVING after ${restart_times[-1]} s"
}
# A cold start first, when this user may drop the page cache (root): the files are not cached.
cold_note="cold start not measured (/proc/sys/vm/drop_caches not writable)"
if [[ "${COLD:-1}" == 1 && -w /proc/sys/vm/drop_caches ]]; then
    sync
    echo 3 > /proc/sys/vm/drop_caches
    restart_once cold
    cold_note="cold start (page cache dropped first): $(fmt "${restart_times[-1]}" .2f) s"
    restart_times=()
    stop_server
fi
for i in $(seq "$RESTARTS"); do
    restart_once "warm $i"
    if (( i < RESTARTS )); then stop_server; fi
done
restart=$(median "${restart_times[@]}")
# The stored data is served: the first COMPLETED order from ListOrders, read with GetOrder.
probe=$("${pin_client[@]}" "$bench_bin" probe --target "127.0.0.1:$port")
log "probe after restart: $probe"
sleep 1
rss_idle=$(rss_mb "$server_pid")
log "RSS with $FILL_EVENTS events: $rss_idle MB; opening $IDLE idle connections"
"${pin_client[@]}" "$bench_bin" idle-connections --target "127.0.0.1:$port" --count "$IDLE" --hold-seconds 20 \
    > "$work/idle.out" 2> "$work/idle.err" &
idle_pid=$!
pids+=("$idle_pid")
for _ in $(seq 1200); do
    grep -q '^ready' "$work/idle.out" 2>/dev/null && break
    sleep 0.1
done
ready=$(grep '^ready' "$work/idle.out" || echo "ready open=0")
sleep 2
rss_conns=$(rss_mb "$server_pid")
serving_with_conns=no
is_serving "$port" && serving_with_conns=yes
wait "$idle_pid" || true
idle_line=$(tail -1 "$work/idle.out")
log "$idle_line"
stop_server
per_conn=$(python3 -c "print(($rss_conns - $rss_idle) * 1024 / max(1, $(kv open "$ready")))")
row 6 "Restart with $FILL_EVENTS events stored ($fill_size MB on disk); RSS" \
    "start → health SERVING: **$(fmt "$restart" .2f) s** warm (median of $RESTARTS: $(printf '%s ' "${restart_times[@]}" | xargs -n1 printf '%.2f ' | sed 's/ $//')); $cold_note; after it GetOrder of a stored order answers ($probe); RSS with the events stored: **$rss_idle MB**; with $(kv open "$ready") idle HTTP/2 connections: **$rss_conns MB** (+$(fmt "$per_conn" .1f) KB per connection; still answering health: $serving_with_conns; $(kv still-open-after-hold "$idle_line") still open after 20 s). $fill_note" \
    "restart ≤ 3 s; RSS ≤ 300 MB" \
    "fill (not timed; kept in Benchmarks/.build and reused by later runs, REFILL=1 redoes it): \`pipeline-load --data-dir D --in-flight 512 --seconds 3600 --commands $FILL_EVENTS\` (one event per command: place, accept, complete); then \`orders-server --data-dir D\` (one cold start after \`echo 3 > /proc/sys/vm/drop_caches\`, then warm ones), polling \`grpc.health.v1.Health/Check\` with nghttp every 10 ms; \`orders-bench probe --target 127.0.0.1:P\`; \`orders-bench idle-connections --target 127.0.0.1:P --count $IDLE --hold-seconds 20\`; RSS from /proc/PID/status"
goals+=("Restart with $FILL_EVENTS events ≤ 3 s: $(python3 -c "print('met' if $restart <= 3 else 'NOT met')") ($(fmt "$restart" .2f) s)")
goals+=("RSS with $FILL_EVENTS events ≤ 300 MB: $(python3 -c "print('met' if $rss_idle <= 300 else 'NOT met')") ($rss_idle MB; $rss_conns MB with $(kv open "$ready") idle connections)")
fi  # row 6

# ---------------------------------------------------------------------------------------------
if want 7; then
# Row 7: Kafka, on the tansu test broker (Scripts/kafka-test-broker.sh: tansu and librdkafka 2.16
# from PyPI wheels), the broker on core 1 with the load generator: rows 3 and 4 at KAFKA_LEVELS.
KAFKA_LEVELS=${KAFKA_LEVELS:-"64"}
log "row 7: Kafka engine on tansu, PlaceOrder and UpdateOrder at $KAFKA_LEVELS in flight"
if "$root/Scripts/kafka-test-broker.sh" setup >&2 && kafka_lib=$("$root/Scripts/kafka-test-broker.sh" env); then
    kafka_port=$(free_port)
    mkdir -p "$work/tansu"
    "$root/Scripts/kafka-test-broker.sh" start "$kafka_port" "$work/tansu" >&2
    pids+=("$(cat "$work/tansu/tansu.pid")")
    LD_LIBRARY_PATH=$kafka_lib start_server kafka "$work/data-kafka" --engine kafka --kafka-brokers "127.0.0.1:$kafka_port"
    kafka_cells=()
    for n in $KAFKA_LEVELS; do
        pline=$("${pin_client[@]}" "$bench_bin" place --target "127.0.0.1:$server_port" --in-flight "$n" --seconds "$LOAD_SECONDS" --warmup 2)
        log "kafka place: $pline"
        orders=$(python3 -c "print(max(200, int($(kv commands/s "$pline") * $LOAD_SECONDS * 1.3)))")
        aline=$("${pin_client[@]}" "$bench_bin" accept --target "127.0.0.1:$server_port" --in-flight "$n" --seconds "$LOAD_SECONDS" --orders "$orders")
        log "kafka accept: $aline"
        kafka_cells+=("PlaceOrder at $n: **$(kv commands/s "$pline")/s**, p50 $(ms p50 "$pline") ms, p99 $(ms p99 "$pline") ms$(err_note "$pline"); accept at $n: **$(kv commands/s "$aline")/s**, p50 $(ms p50 "$aline") ms, p99 $(ms p99 "$aline") ms$(err_note "$aline")")
        if [[ $n == 64 ]]; then
            goals+=("Kafka PlaceOrder at 64 in flight ≥ 5,000/s, p99 ≤ 50 ms (issue 5): $(python3 -c "print('met' if $(kv commands/s "$pline") >= 5000 and $(ms p99 "$pline") <= 50 else 'NOT met')") ($(kv commands/s "$pline")/s, p99 $(ms p99 "$pline") ms)")
        fi
    done
    stop_server
    "$root/Scripts/kafka-test-broker.sh" stop "$work/tansu" >&2 || true
    kafka_joined=$(printf '%s; ' "${kafka_cells[@]}"); kafka_joined=${kafka_joined%; }
    row 7 "Kafka engine on tansu (memory storage, one broker): rows 3 and 4" "$kafka_joined" \
        "issue 5: PlaceOrder ≥ 5,000/s, p99 ≤ 50 ms at 64" \
        "\`kafka-test-broker.sh start P DIR\`; \`orders-server --engine kafka --kafka-brokers 127.0.0.1:P\` (LD_LIBRARY_PATH from \`kafka-test-broker.sh env\`); the orders-bench commands of rows 3 and 4 (warmup 2 s)"
else
    row 7 "Kafka engine on tansu" "not run: the Kafka test environment could not be set up (Scripts/kafka-test-broker.sh setup)" "—" "—"
fi
fi  # row 7

# ---------------------------------------------------------------------------------------------
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo "# Benchmarks"
    echo
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`Scripts/bench.sh\` at commit $commit on $(nproc) cores ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)."
    echo "Servers (orders-server, nghttpd, the grpc-swift-2 peer) pinned to core 0, load generators to core 1 (\`taskset\`);"
    echo "the machine is shared with other work, so rates are medians of $ROUNDS alternating rounds and ratios the median of per-round ratios."
    echo "orders-server runs the embedded engine (SQLite, fsync before acknowledging) with its defaults; release builds."
    echo "The whole run took $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s (builds excluded)."
    echo "h2load rows use -n $N; PlaceOrder/UpdateOrder levels run $LOAD_SECONDS s each (smaller than a long soak, to keep the whole run near 15 minutes)."
    echo
    echo "| # | What | Result | Goal | Command |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}" | sort -s -t'|' -k2,2n
    echo
    echo "## Goals"
    echo
    printf -- '- %s\n' "${goals[@]}"
} > "$work/table.md"
cp "$work/table.md" "$OUT"
cat "$work/table.md"
