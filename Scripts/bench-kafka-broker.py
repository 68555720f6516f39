#!/usr/bin/env python3
"""What the Kafka test broker (tansu) allows, without the orders server: the latency and the
broker CPU of transactions shaped like the Kafka engine's, and of plain produce.

The fused processors commit each batch in one transaction that writes rows, decisions and
integration events (three topics, each record in its order's partition) with the group's
offsets. How long one such transaction takes on the broker bounds how fast a command can
go through: its outcome needs two of them in sequence (the decision, then the decision's
aggregates row), so PlaceOrder latency at N in flight is at least twice that, and
commands/s at most N over it.

For each shape (topics x partitions a transaction writes, records in it) one transactional
producer (confluent-kafka, linger.ms=0, acks=all) runs transactions back to back on fresh
topics and prints their p50/p99 and the broker's CPU per transaction. A plain idempotent
producer's records/s comes first, for scale. Everything it starts is stopped.

Usage:
    Scripts/kafka-test-broker.sh setup
    LD_LIBRARY_PATH=$(Scripts/kafka-test-broker.sh env) python3 Scripts/bench-kafka-broker.py [--transactions 200]
"""
import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "Tests" / "python" / "orders"))
from conftest import Broker  # noqa: E402

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

VALUE = b"x" * 400  # about an aggregates row's size


def broker_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def new_topics(admin: AdminClient, count: int, partitions: int) -> list[str]:
    stamp = time.time_ns()
    names = [f"ceiling-{stamp}-{i}" for i in range(count)]
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result()
    return names


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def plain_produce(address: str, admin: AdminClient, pid: int, records: int) -> str:
    (topic,) = new_topics(admin, 1, 10)
    producer = Producer({"bootstrap.servers": address, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    delivered = 0

    def on_delivery(err, _msg):
        nonlocal delivered
        if err is None:
            delivered += 1

    cpu0, t0 = broker_cpu_seconds(pid), time.monotonic()
    for i in range(records):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=VALUE, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.001)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    elapsed, cpu = time.monotonic() - t0, broker_cpu_seconds(pid) - cpu0
    return (f"| plain idempotent produce, 1 topic x 10 partitions, linger 5 ms | {delivered / elapsed:,.0f} records/s "
            f"| | {cpu / max(delivered, 1) * 1e6:.1f} µs/record |")


def transactions(address: str, admin: AdminClient, pid: int, topics: int, partitions: int, records: int, count: int) -> str:
    names = new_topics(admin, topics, partitions)
    producer = Producer({"bootstrap.servers": address, "transactional.id": names[0], "linger.ms": 0, "acks": "all"})
    producer.init_transactions(30)
    latencies = []
    cpu0 = broker_cpu_seconds(pid)
    for _ in range(count):
        start = time.monotonic()
        producer.begin_transaction()
        for i in range(records):
            # Spread over every partition of every topic, as a batch of many orders is.
            producer.produce(names[i % topics], value=VALUE, partition=(i // topics) % partitions)
        producer.commit_transaction(30)
        latencies.append(time.monotonic() - start)
    cpu = broker_cpu_seconds(pid) - cpu0
    latencies.sort()
    return (f"| transaction: {topics} topic(s) x {partitions} partition(s), {records} records "
            f"| {count / sum(latencies):,.0f} txn/s | p50 {percentile(latencies, 0.5) * 1e3:.1f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1e3:.1f} ms | {cpu / count * 1e3:.2f} ms/txn |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transactions", type=int, default=200, help="transactions per shape")
    ap.add_argument("--records", type=int, default=50_000, help="records of the plain-produce run")
    args = ap.parse_args()
    broker = Broker().start()
    try:
        pid = int(Path(broker.dir, "tansu.pid").read_text())
        admin = AdminClient({"bootstrap.servers": broker.address})
        print("| What | Rate | Latency | Broker CPU |")
        print("|---|---|---|---|")
        print(plain_produce(broker.address, admin, pid, args.records), flush=True)
        # (topics, partitions, records): one partition; one topic of the default ten; the
        # engine's batch shape (three topics of ten) with few and with many records.
        for shape in [(1, 1, 1), (1, 1, 30), (1, 10, 30), (3, 1, 30), (3, 10, 30), (3, 10, 300)]:
            print(transactions(broker.address, admin, pid, *shape, args.transactions), flush=True)
    finally:
        broker.cleanup()


if __name__ == "__main__":
    main()
