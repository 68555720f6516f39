"""The Kafka engine with several instances sharing the partitions (tansu broker)."""
import contextlib
import os
import re
import signal
import threading
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import DRIVER, RIDER, Broker, Health, Server, kafka_args, place, route, update


def instances(broker, count, base_dir, prefix=None, log_level="warning", session_timeout_ms=None, extra_args=()):
    prefix = prefix or f"t{uuid.uuid4().hex[:10]}-"
    servers = []
    for i in range(count):
        d = os.path.join(base_dir, f"instance-{i}")
        os.mkdir(d)
        extra = kafka_args(broker, prefix, f"{prefix}{i}")
        if session_timeout_ms:
            extra += ["--kafka-property", f"session.timeout.ms={session_timeout_ms}"]
        extra += list(extra_args)
        servers.append(Server(d, extra).start(log_level=log_level))
    return servers


@contextlib.contextmanager
def one_instance(broker, base_dir, extra_args=()):
    """One instance on `broker` and a channel to it, for a test that may freeze the broker:
    the instance's logs printed if the test fails; the broker let go on (SIGCONT does
    nothing to a process that runs), the channel closed and the instance stopped at the end."""
    (server,) = instances(broker, 1, base_dir, extra_args=extra_args)
    channel = grpc.insecure_channel(server.address)
    try:
        yield channel
    except BaseException:
        print_logs([server])
        raise
    finally:
        broker.signal(signal.SIGCONT)
        channel.close()
        server.kill(signal.SIGTERM)


def print_logs(servers, lines=60):
    """On a failure: the end of each instance's log, minus debug lines, for pytest to show."""
    for i, s in enumerate(servers):
        tail = [l for l in s.log().splitlines() if " debug " not in l][-lines:]
        print(f"--- instance {i} ({s.data_dir}) ---", *tail, sep="\n")


def stubs(pb, servers):
    channels = [grpc.insecure_channel(s.address) for s in servers]
    return channels, [pb.g.OrderServiceStub(c) for c in channels]


def history_versions(stub, pb, order_id):
    events = stub.GetOrderEvents(pb.m.GetOrderEventsRequest(order_id=order_id), timeout=20).events
    return [e.version for e in events if e.event_type != "ErrorEvent"], events


@pytest.mark.parametrize("count", [2, 3])
def test_instances_share_partitions_and_answer_for_every_order(kafka_broker, pb, count, data_dir):
    S = pb.m.OrderStatus
    servers = instances(kafka_broker, count, data_dir, log_level="debug")
    channels, st = stubs(pb, servers)
    try:
        ids = []
        for i in range(12):
            ids.append(place(st[i % count], pb).order_id)
        for i, order_id in enumerate(ids):
            # Update through another instance than the one that placed it.
            update(st[(i + 1) % count], pb, order_id, S.ORDER_STATUS_ACCEPTED, 1, driver_id=DRIVER)
        for stub in st:
            for order_id in ids:
                o = stub.GetOrder(pb.m.GetOrderRequest(order_id=order_id, min_version=2), timeout=20)
                assert o.status == S.ORDER_STATUS_ACCEPTED and o.version == 2
                versions, _ = history_versions(stub, pb, order_id)
                assert versions == [1, 2]
        # Every instance's subscription sees every order.
        for stub in st:
            seen = set()
            for r in stub.StreamEvents(pb.m.StreamEventsRequest(from_start=True), timeout=20):
                if r.WhichOneof("kind") == "caught_up":
                    break
                if r.WhichOneof("kind") == "event":
                    seen.add(r.event.order_id)
            assert seen == set(ids)
        # The partitions of the group that decides commands (the aggregator's, which runs the
        # command handler with it) are spread over the instances.
        owners = 0
        for s in servers:
            if re.search(r"group=\S*order-aggregator .*partitions assigned", s.log()):
                owners += 1
        assert owners >= 2, "the deciding group's partitions were not spread over the instances"
    except BaseException:
        print_logs(servers)
        raise
    finally:
        for c in channels:
            c.close()
        for s in servers:
            s.kill(signal.SIGTERM)


def test_an_order_placed_through_one_instance_is_updated_through_another_at_once(kafka_broker, pb, data_dir):
    """The second instance's read model may trail the first's acknowledgement by a few
    milliseconds: it must not answer NOT_FOUND for an order the log has (a retry with the
    same request_id would then get another answer)."""
    S = pb.m.OrderStatus
    servers = instances(kafka_broker, 2, data_dir)
    channels, (a, b) = stubs(pb, servers)
    try:
        place(a, pb)  # the groups have formed
        for _ in range(40):
            order_id = place(a, pb).order_id
            assert update(b, pb, order_id, S.ORDER_STATUS_ACCEPTED, 1, driver_id=DRIVER).order.version == 2
    except BaseException:
        print_logs(servers)
        raise
    finally:
        for c in channels:
            c.close()
        for s in servers:
            s.kill(signal.SIGTERM)


@pytest.fixture
def own_broker():
    """A broker of this test's own: no other test's groups and topics slow its rebalances."""
    broker = Broker().start()
    try:
        yield broker
    finally:
        broker.cleanup()


def test_kill9_of_one_instance_under_load(own_broker, pb, data_dir):
    S = pb.m.OrderStatus
    # A short session timeout: the group notices the dead instance within seconds.
    servers = instances(own_broker, 3, data_dir, session_timeout_ms=3000, log_level="debug")
    channels, warm = stubs(pb, servers)
    for stub in warm:  # every instance has joined its groups and decides commands
        place(stub, pb)
    for c in channels:
        c.close()
    acked = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(server):
        with grpc.insecure_channel(server.address) as ch:
            stub = pb.g.OrderServiceStub(ch)
            while not stop.is_set():
                rid = str(uuid.uuid4())
                try:
                    oid = place(stub, pb, request_id=rid).order_id
                    with lock:
                        acked[rid] = oid
                except grpc.RpcError:
                    time.sleep(0.05)

    threads = [threading.Thread(target=writer, args=(s,), daemon=True) for s in servers for _ in range(2)]
    try:
        for t in threads:
            t.start()
        time.sleep(3)
        servers[0].kill(signal.SIGKILL)
        time.sleep(12)
        stop.set()
        for t in threads:
            t.join(timeout=40)
        assert len(acked) > 10
        channels, st = stubs(pb, servers[1:])
        try:
            for stub in st:
                for rid, oid in acked.items():
                    o = stub.GetOrder(pb.m.GetOrderRequest(order_id=oid, min_version=1), timeout=30)
                    assert o.version == 1
            # Retries after the takeover apply nothing twice.
            for rid, oid in list(acked.items())[:20]:
                assert place(st[0], pb, request_id=rid).order_id == oid
                versions, events = history_versions(st[1], pb, oid)
                assert versions == [1] and len(events) == 1
            # And the survivors keep deciding commands, including on the dead one's partitions.
            # A client that times out retries with the same request_id, which is safe.
            for oid in list(acked.values())[:20]:
                rid = str(uuid.uuid4())
                for attempt in range(4):
                    try:
                        r = update(st[0], pb, oid, S.ORDER_STATUS_CANCELLED, 1, request_id=rid)
                        break
                    except grpc.RpcError as e:
                        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED or attempt == 3:
                            raise
                assert r.order.version == 2
        finally:
            for c in channels:
                c.close()
    except BaseException:
        print_logs(servers)
        raise
    finally:
        stop.set()
        for s in servers:
            s.kill(signal.SIGTERM)


def test_broker_absent_at_start_then_started(pb, data_dir):
    broker = Broker()  # not started yet: nothing listens on its port
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    server = Server(data_dir, kafka_args(broker, prefix, prefix + "a")).start(wait=False)
    try:
        with grpc.insecure_channel(server.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            stub = pb.g.OrderServiceStub(ch)
            time.sleep(1)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
                health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as e:
                place(stub, pb)
            assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert e.value.details()
            broker.start()
            server.wait_serving(timeout=60)
            assert place(stub, pb).order.version == 1
    finally:
        server.kill(signal.SIGTERM)
        broker.cleanup()


def test_health_reports_a_broker_that_stops_answering(own_broker, pb, data_dir):
    """A load balancer must learn within seconds that an instance's event store does not
    answer: the health probe waited for a call blocked on the frozen broker (librdkafka's
    30 s request timeout) and stayed SERVING meanwhile."""
    with one_instance(own_broker, data_dir) as channel:
        health = Health(channel)
        place(pb.g.OrderServiceStub(channel), pb)
        assert health.wait_for(health_pb2.HealthCheckResponse.SERVING, 20, every=0.2)
        own_broker.signal(signal.SIGSTOP)
        assert health.wait_for(health_pb2.HealthCheckResponse.NOT_SERVING, 10, every=0.2), "still SERVING 10 s into the outage"
        own_broker.signal(signal.SIGCONT)
        assert health.wait_for(health_pb2.HealthCheckResponse.SERVING, 60, every=0.2), "not SERVING again after the broker came back"


def test_a_command_while_the_broker_is_frozen_fails_fast_and_its_retry_succeeds(own_broker, pb, data_dir):
    """A command's append waited for librdkafka's 30 s delivery timeout while the broker
    did not answer, past the call's deadline: the client got its own bare DEADLINE_EXCEEDED.
    It must hear within seconds that the event store is unavailable and that a retry is
    safe; the retry, once the broker is back, places the order once."""
    with one_instance(own_broker, data_dir) as channel:
        stub = pb.g.OrderServiceStub(channel)
        rid = str(uuid.uuid4())
        request = pb.m.PlaceOrderRequest(request_id=rid, rider_id=RIDER, price="123.45", route=route(pb))
        first = place(stub, pb)  # the groups have formed
        own_broker.signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as failed:
            stub.PlaceOrder(request, timeout=20)
        elapsed = time.monotonic() - started
        status, details = failed.value.code(), failed.value.details()
        assert status == grpc.StatusCode.UNAVAILABLE, f"{status} after {elapsed:.1f} s: {details}"
        assert elapsed <= 5, f"UNAVAILABLE after {elapsed:.1f} s"
        assert "event store is unavailable" in details and "same request_id is safe" in details, details
        own_broker.signal(signal.SIGCONT)
        # The same request again, until the instance answers (its groups may rejoin first).
        deadline = time.monotonic() + 60
        while True:
            try:
                placed = stub.PlaceOrder(request, timeout=20)
                break
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        versions, events = history_versions(stub, pb, placed.order_id)
        assert versions == [1] and len(events) == 1
        orders = stub.ListOrders(pb.m.ListOrdersRequest(), timeout=20).orders
        assert sorted(o.id for o in orders) == sorted([first.order_id, placed.order_id])


def test_an_update_of_an_order_unknown_here_while_the_broker_is_frozen_is_unavailable(own_broker, pb, data_dir):
    """An update of an order this instance has not seen asks the log whether it exists.
    While the broker did not answer, that lookup ran to librdkafka's request timeout, past
    the call's deadline, and its error then read as NOT_FOUND: a client would give up on an
    order that may well exist. It must hear within seconds that the event store is
    unavailable (here within 1 s: --kafka-append-patience)."""
    with one_instance(own_broker, data_dir, extra_args=["--kafka-append-patience", "1"]) as channel:
        stub = pb.g.OrderServiceStub(channel)
        place(stub, pb)  # the groups have formed
        own_broker.signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as failed:
            update(stub, pb, str(uuid.uuid4()), pb.m.OrderStatus.ORDER_STATUS_CANCELLED, 1)
        elapsed = time.monotonic() - started
        status, details = failed.value.code(), failed.value.details()
        assert status == grpc.StatusCode.UNAVAILABLE, f"{status} after {elapsed:.1f} s: {details}"
        assert elapsed <= 3, f"UNAVAILABLE after {elapsed:.1f} s"
        assert "within 1.0 seconds whether order" in details, details
        own_broker.signal(signal.SIGCONT)
        # Once the broker answers, an unknown order is NOT_FOUND again.
        deadline = time.monotonic() + 60
        while True:
            try:
                update(stub, pb, str(uuid.uuid4()), pb.m.OrderStatus.ORDER_STATUS_CANCELLED, 1)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    break
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
