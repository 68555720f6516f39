#!/usr/bin/env python3
"""How long a kill -9 of one Kafka instance stalls commands: PlaceOrder latency through the
survivors, by the second in which each call was issued, before and after the kill.

Starts a tansu broker and N instances of orders-server on it (one consumer group, a short
session timeout so the group notices the dead member soon), keeps W writers per survivor
placing orders (they land on every partition, the dead instance's included), kills
instance 0 with SIGKILL, and prints a line per second. Everything it starts is stopped.

Closed-loop writers all end up waiting on the dead instance's partitions within a second
of the kill, whatever happens to the others; `--rate R` issues R calls per second on each
survivor instead, whether earlier ones returned or not, so the line of each second shows
how many calls still went through quickly (partitions the survivors kept).

Usage (after `swift build`; ORDERS_SERVER_BIN picks another orders-server binary):
    Scripts/kafka-test-broker.sh setup
    python3 Scripts/bench-kafka-takeover.py [--instances 3] [--writers 4 | --rate 20]
        [--session-timeout-ms 3000] [--after 20]
"""
import argparse
import concurrent.futures
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "Tests" / "python" / "orders"))
from conftest import Broker, Server, generated_stubs, kafka_args, place  # noqa: E402

import grpc  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--writers", type=int, default=4, help="writers per surviving instance")
    ap.add_argument("--rate", type=float, default=0,
                    help="calls per second on each survivor, issued on schedule (0: closed-loop writers)")
    ap.add_argument("--session-timeout-ms", type=int, default=3000)
    ap.add_argument("--eager", action="store_true",
                    help="eager rebalancing (partition.assignment.strategy=range) instead of cooperative-sticky")
    ap.add_argument("--before", type=float, default=4.0, help="seconds of load before the kill")
    ap.add_argument("--after", type=int, default=20, help="seconds of load after the kill")
    args = ap.parse_args()
    pb = generated_stubs()

    broker = Broker().start()
    base = tempfile.mkdtemp(prefix="orders-takeover-")
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    servers = []
    stop = threading.Event()
    pool = None
    try:
        for i in range(args.instances):
            d = os.path.join(base, f"instance-{i}")
            os.mkdir(d)
            extra = kafka_args(broker, prefix, f"{prefix}{i}") + [
                "--kafka-property", f"session.timeout.ms={args.session_timeout_ms}"] + (
                ["--kafka-property", "partition.assignment.strategy=range"] if args.eager else [])
            servers.append(Server(d, extra).start())
        for s in servers:  # every instance has joined its groups and decides commands
            with grpc.insecure_channel(s.address) as ch:
                place(pb.g.OrderServiceStub(ch), pb)
        results = []  # (issued at, latency in s, or None for an error)
        lock = threading.Lock()

        def call(stub, issued):
            """Places an order and records its latency (None: it failed) by when it was issued."""
            try:
                place(stub, pb)
                outcome = time.time() - issued
            except grpc.RpcError:
                outcome = None
            with lock:
                results.append((issued, outcome))

        def writer(server):
            with grpc.insecure_channel(server.address) as ch:
                stub = pb.g.OrderServiceStub(ch)
                while not stop.is_set():
                    call(stub, time.time())

        def scheduled(server, pool):
            with grpc.insecure_channel(server.address) as ch:
                stub = pb.g.OrderServiceStub(ch)
                pending = []
                next_at = time.time()
                while not stop.is_set():
                    pending.append(pool.submit(call, stub, next_at))
                    next_at += 1 / args.rate
                    time.sleep(max(0.0, next_at - time.time()))
                concurrent.futures.wait(pending, timeout=60)

        pool = concurrent.futures.ThreadPoolExecutor(max_workers=512) if args.rate > 0 else None
        if pool:
            threads = [threading.Thread(target=scheduled, args=(s, pool), daemon=True) for s in servers[1:]]
        else:
            threads = [threading.Thread(target=writer, args=(s,), daemon=True)
                       for s in servers[1:] for _ in range(args.writers)]
        for t in threads:
            t.start()
        time.sleep(args.before)
        killed = time.time()
        servers[0].kill(signal.SIGKILL)
        time.sleep(args.after)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        load = f"{args.rate:g} calls/s" if pool else f"{args.writers} writers"
        print(f"{args.instances} instances, {load} on each of the {args.instances - 1} survivors, "
              f"{'eager' if args.eager else 'cooperative'} rebalancing, "
              f"session.timeout.ms={args.session_timeout_ms}; instance 0 killed with SIGKILL at 0 s")
        for second in range(-2, args.after):
            window = [r for t, r in results if killed + second <= t < killed + second + 1]
            ok = sorted(r for r in window if r is not None)
            worst = f"{ok[-1]:.3f} s" if ok else "-"
            quick = sum(1 for r in ok if r < 1.0)
            print(f"issued {second:+3d}..{second + 1:+3d} s: {len(ok):4d} placed ({quick:4d} within 1 s), "
                  f"{len(window) - len(ok)} failed, slowest {worst}")
    finally:
        stop.set()
        if pool:
            pool.shutdown(wait=False, cancel_futures=True)
        for s in servers:
            s.kill(signal.SIGTERM)
        broker.cleanup()


if __name__ == "__main__":
    main()
