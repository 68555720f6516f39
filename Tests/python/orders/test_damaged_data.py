"""Restarts on a data directory damaged as a crash or an operator can leave it: the server
recovers with nothing acknowledged lost, or refuses to start and says why; it never serves
a read model that the log does not back."""
import os
import shutil
import signal
import subprocess

import grpc

from conftest import Server, binary, place


def sqlite_files(data_dir, name):
    """A SQLite database's file and the -wal and -shm files beside it, those that exist."""
    paths = (os.path.join(data_dir, name + suffix) for suffix in ("", "-wal", "-shm"))
    return [p for p in paths if os.path.exists(p)]


def list_ids(stub, pb):
    return {o.id for o in stub.ListOrders(pb.m.ListOrdersRequest(page_size=1000), timeout=10).orders}


def test_a_log_older_than_the_read_model_is_refused(data_dir, pb):
    """log.sqlite restored from an older copy (a truncated log.sqlite-wal does the same):
    the read model holds orders the log lost, and its checkpoint counts offsets the log
    hands out again. Served, it listed the lost orders, and every new command timed out
    (the projector skipped the records at those offsets as already read), while health
    said SERVING. Refused, with what to do; without the read model it is rebuilt from the
    log as it is."""
    log = os.path.join(data_dir, "log.sqlite")
    server = Server(data_dir).start()
    with grpc.insecure_channel(server.address) as channel:
        kept = place(pb.g.OrderServiceStub(channel), pb).order_id
    server.kill(signal.SIGTERM)  # closed cleanly: the whole log is in log.sqlite
    shutil.copy(log, log + ".backup")
    server = Server(data_dir).start()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb.g.OrderServiceStub(channel)
        lost = {place(stub, pb).order_id for _ in range(2)}
        assert list_ids(stub, pb) == lost | {kept}
    server.kill(signal.SIGTERM)

    os.replace(log + ".backup", log)
    started = subprocess.Popen(
        [binary("orders-server", "ORDERS_SERVER_BIN"), "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first_line = started.stdout.readline()
        assert b"listening" not in first_line, "it started on a log older than its read model"
        started.wait(timeout=60)
    finally:
        if started.poll() is None:
            started.kill()
            started.wait()
        started.stdout.close()
    err = started.stderr.read()
    started.stderr.close()
    assert started.returncode != 0
    assert b"the read model is ahead of the log" in err, err
    assert b"readmodel.sqlite" in err, err

    # The operator's way out: the read model goes, and is rebuilt from the log.
    for path in sqlite_files(data_dir, "readmodel.sqlite"):
        os.remove(path)
    server = Server(data_dir).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb.g.OrderServiceStub(channel)
            assert list_ids(stub, pb) == {kept}
            new = place(stub, pb).order_id
            assert list_ids(stub, pb) == {kept, new}
    finally:
        server.kill(signal.SIGTERM)


def test_a_deleted_log_is_refused_and_not_replaced_by_an_empty_one(data_dir, pb):
    """With log.sqlite gone the read model is ahead of the (new, empty) log: the start is
    refused, and the empty log it made is not left where the old one is to be restored."""
    server = Server(data_dir).start()
    with grpc.insecure_channel(server.address) as channel:
        place(pb.g.OrderServiceStub(channel), pb)
    server.kill(signal.SIGTERM)
    for path in sqlite_files(data_dir, "log.sqlite"):
        os.remove(path)
    run = subprocess.run(
        [binary("orders-server", "ORDERS_SERVER_BIN"), "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert run.returncode != 0
    assert b"the read model is ahead of the log" in run.stderr, run.stderr
    left = sqlite_files(data_dir, "log.sqlite")
    assert left == [], left
