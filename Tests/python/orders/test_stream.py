"""StreamEvents: history, caught_up once, live events, filters, resume after a position."""
import os
import queue
import threading
import uuid

import grpc
import pytest

from conftest import DRIVER, place, update


def collect(stub, pb, request, until, timeout=10):
    """Reads a StreamEvents call until `until(items)` is true; returns the items."""
    items = []
    call = stub.StreamEvents(request, timeout=timeout)
    try:
        for r in call:
            kind = r.WhichOneof("kind")
            if kind == "heartbeat":
                continue
            items.append(r)
            if until(items):
                break
    finally:
        call.cancel()
    return items


def kinds(items):
    return [r.WhichOneof("kind") for r in items]


def test_catch_up_then_live(stub, pb):
    S = pb.m.OrderStatus
    ids = [place(stub, pb).order_id for _ in range(3)]
    got = queue.Queue()

    def reader():
        call = stub.StreamEvents(pb.m.StreamEventsRequest(from_start=True), timeout=15)
        try:
            for r in call:
                got.put(r)
        except grpc.RpcError:
            pass

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    history = [got.get(timeout=10) for _ in range(4)]
    assert kinds(history) == ["event", "event", "event", "caught_up"]
    assert sorted(r.event.order_id for r in history[:3]) == sorted(ids)
    update(stub, pb, ids[1], S.ORDER_STATUS_ACCEPTED, 1, driver_id=DRIVER)
    live = got.get(timeout=10)
    while live.WhichOneof("kind") == "heartbeat":
        live = got.get(timeout=10)
    assert live.event.event_type == "OrderAcceptedEvent" and live.event.order_id == ids[1]
    assert live.event.order_accepted.driver_id == DRIVER


def test_filters(stub, pb):
    S = pb.m.OrderStatus
    a, b = place(stub, pb).order_id, place(stub, pb).order_id
    update(stub, pb, a, S.ORDER_STATUS_CANCELLED, 1)
    update(stub, pb, b, S.ORDER_STATUS_CANCELLED, 1)
    only_a = collect(stub, pb, pb.m.StreamEventsRequest(from_start=True, order_id=a),
                     lambda items: kinds(items)[-1] == "caught_up")
    assert [r.event.event_type for r in only_a[:-1]] == ["OrderPlacedEvent", "OrderCancelledEvent"]
    assert all(r.event.order_id == a for r in only_a[:-1])
    cancels = collect(stub, pb, pb.m.StreamEventsRequest(event_types=["OrderCancelledEvent"]),
                      lambda items: kinds(items)[-1] == "caught_up")
    assert sorted(r.event.order_id for r in cancels[:-1]) == sorted([a, b])


def test_resume_after_position_exactly_once(stub, pb):
    S = pb.m.OrderStatus
    ids = [place(stub, pb).order_id for _ in range(4)]
    first = collect(stub, pb, pb.m.StreamEventsRequest(from_start=True), lambda items: kinds(items)[-1] == "caught_up")
    events = [r.event for r in first if r.WhichOneof("kind") == "event"]
    assert len(events) == 4
    resume = events[1].position
    for i in ids:
        update(stub, pb, i, S.ORDER_STATUS_CANCELLED, 1)
    after = collect(stub, pb, pb.m.StreamEventsRequest(after_position=resume),
                    lambda items: kinds(items)[-1] == "caught_up")
    got = [(r.event.order_id, r.event.version) for r in after if r.WhichOneof("kind") == "event"]
    expected = {(e.order_id, e.version) for e in events[2:]} | {(i, 2) for i in ids}
    assert len(got) == len(set(got)) == len(expected)
    assert set(got) == expected
    for i in ids:
        versions = [v for o, v in got if o == i]
        assert versions == sorted(versions)


def test_bad_stream_requests(stub, pb):
    for req in (pb.m.StreamEventsRequest(after_position="v1:nonsense"),
                pb.m.StreamEventsRequest(order_id="not-a-uuid"),
                pb.m.StreamEventsRequest(event_types=["OrderTeleportedEvent"]),
                # Set to false, the oneof is set all the same: no start is refused, not
                # taken for from_end (which streamed the opposite of what was asked).
                pb.m.StreamEventsRequest(from_end=False),
                pb.m.StreamEventsRequest(from_start=False)):
        with pytest.raises(grpc.RpcError) as e:
            list(stub.StreamEvents(req, timeout=5))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, req


def test_shutdown_ends_subscriptions_at_once_with_unavailable(data_dir, pb):
    """SIGTERM: a subscription ends at once with UNAVAILABLE (resume elsewhere), not after
    the 10 s grace period with the connection torn down under it."""
    import signal
    import time

    from conftest import Server

    server = Server(data_dir).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb.g.OrderServiceStub(channel)
            place(stub, pb)
            call = stub.StreamEvents(pb.m.StreamEventsRequest(from_start=True), timeout=30)
            for r in call:
                if r.WhichOneof("kind") == "caught_up":
                    break
            started = time.monotonic()
            os.kill(server.proc.pid, signal.SIGTERM)
            with pytest.raises(grpc.RpcError) as e:
                for _ in call:
                    pass
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
            assert "after_position" in e.value.details()
            assert time.monotonic() - started < 5
    finally:
        server.kill()
