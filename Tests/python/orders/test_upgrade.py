"""A data directory written by an older orders-server opens with this one, nothing lost:
orders, histories, positions handed out before the upgrade, and the outcomes retries get.

data/orders-server-66bf17a.sql is the data directory of orders-server built at 66bf17a
(a build from before the log's newest-record-per-key index, whose log.sqlite has the same
format number as today's but no `meta` table), after these commands, each answered as noted:
  PlaceOrder old-place-a (order A), UpdateOrder old-accept-a ACCEPTED at 1 (version 2),
  old-complete-a COMPLETED at 2 (3), old-cancel-a CANCELLED at 3 (FAILED_PRECONDITION);
  PlaceOrder old-place-b (B), old-cancel-b CANCELLED at 1 (2), old-accept-b ACCEPTED at 1
  (ABORTED); PlaceOrder old-place-c (C).
Both SQLite files were dumped as SQL (schema as that build created it, blobs as text) after
a SIGTERM; A's events had the positions in A_POSITIONS."""
import sqlite3
import signal
from pathlib import Path

import grpc

from conftest import DRIVER, RIDER, Server, update

FIXTURE = Path(__file__).parent / "data" / "orders-server-66bf17a.sql"
A, B, C = ("5dea0d0b-ba51-5f26-a2de-486cb56e9ab1", "94928912-ed90-55ae-b977-d7506ff71b0e",
           "2ca7a141-7b3f-5bc4-bf65-476f55ba9196")
A_POSITIONS = ["v1:0.0.0.0.0.2.0.0.0.0", "v1:0.0.0.0.0.4.0.0.0.0", "v1:0.0.0.0.0.6.0.0.0.0",
               "v1:0.0.0.0.0.8.0.0.0.0"]


def restore(fixture: Path, data_dir: str):
    """Writes each `-- FILE name` section of the dump into data_dir/name."""
    sections = fixture.read_text().split("-- FILE ")[1:]
    for section in sections:
        name, sql = section.split("\n", 1)
        conn = sqlite3.connect(str(Path(data_dir) / name.strip()))
        conn.executescript(sql)
        conn.close()


def events_until_caught_up(stub, pb, request):
    events = []
    call = stub.StreamEvents(request, timeout=10)
    try:
        for r in call:
            kind = r.WhichOneof("kind")
            if kind == "caught_up":
                return events
            if kind == "event":
                events.append(r.event)
    finally:
        call.cancel()
    raise AssertionError("the stream ended before caught_up")


def place_again(stub, pb, request_id):
    return stub.PlaceOrder(pb.m.PlaceOrderRequest(
        request_id=request_id, rider_id=RIDER, price="123.45",
        route=[pb.m.Waypoint(address="A", lat=50.5, lon=30.4), pb.m.Waypoint(address="B", lat=50.4, lon=30.5)]),
        timeout=30)


def test_a_data_directory_of_an_older_build_opens_with_nothing_lost(data_dir, pb):
    S = pb.m.OrderStatus
    restore(FIXTURE, data_dir)
    server = Server(data_dir).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb.g.OrderServiceStub(channel)
            orders = {o: stub.GetOrder(pb.m.GetOrderRequest(order_id=o), timeout=10) for o in (A, B, C)}
            assert [(orders[o].status, orders[o].version) for o in (A, B, C)] == [
                (S.ORDER_STATUS_COMPLETED, 3), (S.ORDER_STATUS_CANCELLED, 2), (S.ORDER_STATUS_PLACED, 1)]
            assert [e.reason for e in orders[A].errors] == ["TRANSITION_NOT_ALLOWED"]
            assert [e.reason for e in orders[B].errors] == ["VERSION_MISMATCH"]
            history = stub.GetOrderEvents(pb.m.GetOrderEventsRequest(order_id=A), timeout=10).events
            assert [e.event_type for e in history] == [
                "OrderPlacedEvent", "OrderAcceptedEvent", "OrderCompletedEvent", "ErrorEvent"]
            assert [e.position for e in history] == A_POSITIONS
            listed = stub.ListOrders(pb.m.ListOrdersRequest(page_size=10), timeout=10)
            assert [o.id for o in listed.orders] == [A, B, C] and not listed.next_page_token

            # Retries of commands the old server answered get the same outcomes.
            assert place_again(stub, pb, "old-place-a").order_id == A
            again = update(stub, pb, A, S.ORDER_STATUS_ACCEPTED, 1, driver_id=DRIVER, request_id="old-accept-a")
            assert (again.order.status, again.order.version) == (S.ORDER_STATUS_ACCEPTED, 2)
            for request_id, order_id, status, version, code in [
                    ("old-cancel-a", A, S.ORDER_STATUS_CANCELLED, 3, grpc.StatusCode.FAILED_PRECONDITION),
                    ("old-accept-b", B, S.ORDER_STATUS_ACCEPTED, 1, grpc.StatusCode.ABORTED)]:
                try:
                    update(stub, pb, order_id, status, version, driver_id=DRIVER if status == S.ORDER_STATUS_ACCEPTED else "",
                           request_id=request_id)
                    raise AssertionError(f"{request_id} was applied on retry")
                except grpc.RpcError as e:
                    assert e.code() == code, (request_id, e.details())

            # A subscriber resumes after a position the old server handed out: every later
            # event once, none before.
            everything = events_until_caught_up(stub, pb, pb.m.StreamEventsRequest(from_start=True))
            assert len(everything) == 8  # A's 4, B's 3 (an ErrorEvent), C's 1
            resumed = events_until_caught_up(stub, pb, pb.m.StreamEventsRequest(after_position=A_POSITIONS[0]))

            def keys(events):
                return sorted((e.order_id, e.version, e.event_type) for e in events)

            # (A stream's positions cover every partition read so far, so they are compared
            # by the events they follow.)
            assert keys(resumed) == [k for k in keys(everything) if k != (A, 1, "OrderPlacedEvent")]

            # New commands on old orders, and new orders, go through.
            accepted = update(stub, pb, C, S.ORDER_STATUS_ACCEPTED, 1, driver_id=DRIVER)
            assert (accepted.order.status, accepted.order.version) == (S.ORDER_STATUS_ACCEPTED, 2)
            new_order = place_again(stub, pb, "new-place").order_id
    finally:
        server.kill(signal.SIGTERM)

    # And the upgraded directory opens again.
    server = Server(data_dir).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb.g.OrderServiceStub(channel)
            assert stub.GetOrder(pb.m.GetOrderRequest(order_id=C), timeout=10).version == 2
            assert stub.GetOrder(pb.m.GetOrderRequest(order_id=new_order), timeout=10).version == 1
    finally:
        server.kill(signal.SIGTERM)
