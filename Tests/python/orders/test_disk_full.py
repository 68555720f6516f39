"""A full disk on the embedded engine, as a load balancer sees it: every command fails, so
health must say NOT_SERVING, and SERVING again by itself once the space is back, with no
command sent meanwhile (a load balancer sends none to an instance that is not serving).
The "disk" is log.sqlite's (or readmodel.sqlite's) page limit, set through the server's
private --test-log-page-limit-file (--test-read-model-page-limit-file): SQLite fails an
insert past it with SQLITE_FULL."""
import os
import signal
import time
import uuid

import grpc
from grpc_health.v1 import health_pb2

from conftest import RIDER, Health, Server, place, route

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_reports_a_full_disk_until_the_space_is_back(data_dir, pb):
    limit = os.path.join(data_dir, "page-limit")
    server = Server(data_dir, ["--test-log-page-limit-file", limit]).start()
    channel = grpc.insecure_channel(server.address)
    health = Health(channel)
    status, wait_for = health.status, health.wait_for
    stub = pb.g.OrderServiceStub(channel)

    try:
        place(stub, pb)
        assert status() == SERVING
        with open(limit, "w") as f:
            f.write("1\n")  # not a page more than log.sqlite has now
        failure = None
        for _ in range(1000):
            try:
                place(stub, pb)
            except grpc.RpcError as e:
                failure = e
                break
        assert failure is not None, "the page limit never stopped a command"
        assert failure.code() == grpc.StatusCode.UNAVAILABLE
        assert "disk is full" in failure.details()

        assert wait_for(NOT_SERVING, 5), "still SERVING 5 s after a command failed on a full disk"
        # Still full: the server's own probes fail as the command did.
        time.sleep(2.5)
        assert status() == NOT_SERVING

        os.remove(limit)  # the space is back; no command is sent to prove it
        assert wait_for(SERVING, 10), "not SERVING again 10 s after the space came back"
        assert place(stub, pb).order.version == 1

        log = server.log()
        assert log.count("not serving: the event store cannot write: the disk is full: ") == 1, log
        assert "the event store does not answer" not in log, log
    finally:
        channel.close()
        server.kill(signal.SIGTERM)


def test_a_full_read_model_is_reported_and_loses_no_command(data_dir, pb):
    """The log takes the command, the read model cannot record its outcome: the caller is
    told to retry, health says why, and once the space is back the projector catches up by
    itself and the retry gets the command's one outcome."""
    limit = os.path.join(data_dir, "read-model-page-limit")
    server = Server(data_dir, ["--test-read-model-page-limit-file", limit]).start()
    channel = grpc.insecure_channel(server.address)
    health = Health(channel)
    stub = pb.g.OrderServiceStub(channel)

    def place_once(request_id, timeout):
        return stub.PlaceOrder(pb.m.PlaceOrderRequest(
            request_id=request_id, rider_id=RIDER, price="123.45", route=route(pb)), timeout=timeout)

    try:
        place(stub, pb)
        assert health.status() == SERVING
        with open(limit, "w") as f:
            f.write("1\n")  # not a page more than readmodel.sqlite has now
        failed = None
        for _ in range(200):
            request_id = str(uuid.uuid4())
            try:
                place_once(request_id, 2)
            except grpc.RpcError as e:
                failed = (request_id, e)
                break
        assert failed is not None, "the read model's page limit never held a command up"
        request_id, error = failed
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
        assert "request_id" in error.details(), error.details()  # says a retry is safe

        assert health.wait_for(NOT_SERVING, 5), "still SERVING 5 s after the read model failed to write"
        assert "not serving: the read model cannot write: the disk is full: " in server.log()

        os.remove(limit)
        # No command is sent: the projector retries the failed write by itself (backoff ≤ 5 s).
        assert health.wait_for(SERVING, 15), "not SERVING again 15 s after the space came back"
        again = place_once(request_id, 10)
        assert again.order.version == 1
        got = stub.GetOrder(pb.m.GetOrderRequest(order_id=again.order.id), timeout=10)
        assert got.version == 1 and got.status == again.order.status
    finally:
        channel.close()
        server.kill(signal.SIGTERM)
