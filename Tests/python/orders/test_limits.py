"""What the server refuses up front: commands past an order's limit, and data written with
another partition count (before it announces a port)."""
import os
import subprocess
import time
import uuid

import grpc
import pytest

from conftest import DRIVER, Server, binary, place, update
from test_scenario import error_info


def test_an_order_records_a_limited_number_of_commands(data_dir, pb):
    """Each command adds two entries to the order's aggregates lists, which every row of the
    order carries whole: past --max-commands-per-order, a command the order would reject is
    refused with the same status and nothing written, so its history stops growing; the
    state changes left in its life still go through (a client looping on a stale version
    cannot freeze it)."""
    server = Server(data_dir, extra=["--max-commands-per-order", "5"]).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb.g.OrderServiceStub(channel)
            S = pb.m.OrderStatus
            order_id = place(stub, pb).order_id
            recorded = []
            for _ in range(4):  # COMPLETED is not allowed from PLACED: an ErrorEvent each
                rid = str(uuid.uuid4())
                with pytest.raises(grpc.RpcError) as e:
                    update(stub, pb, order_id, S.ORDER_STATUS_COMPLETED, 1, request_id=rid)
                assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                recorded.append(rid)
            # At the limit: the same statuses, but not recorded.
            for status, version, code in ((S.ORDER_STATUS_COMPLETED, 1, grpc.StatusCode.FAILED_PRECONDITION),
                                          (S.ORDER_STATUS_CANCELLED, 7, grpc.StatusCode.ABORTED)):
                with pytest.raises(grpc.RpcError) as e:
                    update(stub, pb, order_id, status, version)
                assert e.value.code() == code, e.value.details()
                assert "not recorded" in e.value.details()
                assert error_info(e.value).metadata["actual_version"] == "1"
            # A retry of a command the order took still gets its first outcome.
            with pytest.raises(grpc.RpcError) as e:
                update(stub, pb, order_id, S.ORDER_STATUS_COMPLETED, 1, request_id=recorded[0])
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "not recorded" not in e.value.details()
            # The order can still be accepted and completed.
            assert update(stub, pb, order_id, S.ORDER_STATUS_ACCEPTED, 1, driver_id=DRIVER).order.version == 2
            assert update(stub, pb, order_id, S.ORDER_STATUS_COMPLETED, 2).order.status == S.ORDER_STATUS_COMPLETED
            with pytest.raises(grpc.RpcError) as e:
                update(stub, pb, order_id, S.ORDER_STATUS_CANCELLED, 3)
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            events = stub.GetOrderEvents(pb.m.GetOrderEventsRequest(order_id=order_id), timeout=5).events
            assert [e.event_type for e in events] == (["OrderPlacedEvent"] + ["ErrorEvent"] * 4
                                                      + ["OrderAcceptedEvent", "OrderCompletedEvent"])
            # Other orders are not affected.
            other = place(stub, pb).order_id
            assert update(stub, pb, other, S.ORDER_STATUS_CANCELLED, 1).order.version == 2
    finally:
        server.kill()


def test_data_with_another_partition_count_stops_the_server_before_it_listens(data_dir, pb):
    server = Server(data_dir).start()
    with grpc.insecure_channel(server.address) as channel:
        place(pb.g.OrderServiceStub(channel), pb)
    server.kill()
    with open(os.path.join(data_dir, "server.log"), "ab") as log:
        run = subprocess.run(
            [binary("orders-server", "ORDERS_SERVER_BIN"), "--listen", "127.0.0.1:0", "--data-dir", data_dir,
             "--partitions", "3"], stdout=subprocess.PIPE, stderr=log, timeout=60)
    assert run.returncode != 0
    assert b"listening" not in run.stdout
    assert "has 10 partitions, configured 3" in server.log()
    assert "was written with 10 partitions per log, and --partitions (or ORDERS_PARTITIONS" in server.log()
    assert "start with --partitions 10" in server.log()


def test_a_call_waits_up_to_its_own_deadline_and_one_without_up_to_the_default(data_dir, pb):
    """GetOrder(min_version) long-polls: a client that gives 4 s gets its 4 s, not the
    server's default for calls that give none (--default-timeout, 1 s here; 30 s unless set).
    The server answers a tenth of the deadline early (at most 1 s), so that its own
    DEADLINE_EXCEEDED, which says what the order's version is, reaches the client before
    the client's timer fires with a bare "Deadline Exceeded"."""
    server = Server(data_dir, extra=["--default-timeout", "1"]).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb.g.OrderServiceStub(channel)
            order_id = place(stub, pb).order_id
            for timeout, at_least, below in ((None, 0.9, 3.5), (4, 3.5, 3.95), (1, 0.85, 0.99)):
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as e:
                    stub.GetOrder(pb.m.GetOrderRequest(order_id=order_id, min_version=5), timeout=timeout)
                waited = time.monotonic() - started
                assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.value.details()
                assert "is at version 1; version 5 was not reached in time" in e.value.details(), (timeout, e.value.details())
                assert at_least <= waited < below, (timeout, waited)
    finally:
        server.kill()
