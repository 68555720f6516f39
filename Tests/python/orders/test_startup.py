"""How the server starts and stops, as an operator sees it: one server per data directory,
environment values checked like flags, no data directory left behind by a start that
failed, SIGHUP handled like SIGTERM, options of the other engine refused, a second signal
that does not wait out the drain."""
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

import grpc
import pytest

from conftest import Server, binary, place


def run_server(*args, env=None):
    return subprocess.run(
        [binary("orders-server", "ORDERS_SERVER_BIN"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        timeout=60, env=env)


def test_a_data_directory_serves_one_server_at_a_time(data_dir, pb):
    """A second server on the same directory would append to the log at the same offsets
    and fail every command; it is refused at start and the first serves on."""
    first = Server(data_dir).start()
    try:
        second = run_server("--listen", "127.0.0.1:0", "--data-dir", data_dir)
        assert second.returncode != 0
        assert b"listening" not in second.stdout
        assert f"in use by another orders-server (pid {first.proc.pid})".encode() in second.stderr
        with grpc.insecure_channel(first.address) as channel:
            place(pb.g.OrderServiceStub(channel), pb)
    finally:
        first.kill(signal.SIGTERM)
    # Released with the process: the next server starts.
    Server(data_dir).start().kill(signal.SIGTERM)


def test_environment_values_that_do_not_parse_are_refused(data_dir):
    for name, value in [("ORDERS_ENGINE", "kafak"), ("ORDERS_PARTITIONS", "abc"), ("ORDERS_LOG_LEVEL", "verbose")]:
        run = run_server("--listen", "127.0.0.1:0", "--data-dir", data_dir, env=dict(os.environ, **{name: value}))
        assert run.returncode == 64, (name, run.stderr)
        assert f"{name}='{value}' must be".encode() in run.stderr
    # A value that parses but is wrong names its variable too.
    run = run_server("--data-dir", data_dir, env=dict(os.environ, ORDERS_LISTEN="bad"))
    assert run.returncode == 64, run.stderr
    assert b"--listen (or ORDERS_LISTEN) must be HOST:PORT, got 'bad'" in run.stderr


def test_options_of_the_other_engine_are_refused(data_dir):
    """Dropped silently, --kafka-brokers would leave a server on local disk that its operator
    believes is on Kafka, and --partitions on Kafka would not be the topics' count."""
    cases = [
        ("embedded", ["--kafka-brokers", "10.0.0.1:9092"], {}, "--kafka-brokers (or ORDERS_KAFKA_BROKERS) is for --engine kafka only"),
        ("embedded", [], {"ORDERS_KAFKA_BROKERS": "10.0.0.1:9092"}, "--kafka-brokers (or ORDERS_KAFKA_BROKERS) is for --engine kafka only"),
        ("embedded", ["--kafka-property", "security.protocol=ssl"], {}, "--kafka-property is for --engine kafka only"),
        ("kafka", ["--partitions", "3"], {}, "--partitions (or ORDERS_PARTITIONS) is for --engine embedded only"),
        ("embedded", ["--kafka-catch-up-readers", "8"], {},
         "--kafka-catch-up-readers (or ORDERS_KAFKA_CATCH_UP_READERS) is for --engine kafka only"),
        ("kafka", ["--kafka-catch-up-readers", "0"], {}, "--kafka-catch-up-readers must be within 1...256"),
        ("embedded", ["--kafka-append-patience", "5"], {},
         "--kafka-append-patience (or ORDERS_KAFKA_APPEND_PATIENCE) is for --engine kafka only"),
        ("kafka", ["--kafka-append-patience", "0"], {}, "--kafka-append-patience must be within 0.1...3600 seconds"),
    ]
    for engine, args, env, message in cases:
        run = run_server("--listen", "127.0.0.1:0", "--data-dir", data_dir, "--engine", engine, *args,
                         env=dict(os.environ, **env))
        assert run.returncode == 64, (args, env, run.stderr)
        assert message.encode() in run.stderr, run.stderr


def test_a_start_that_cannot_listen_leaves_no_new_data_directory(data_dir):
    """The directory it created would otherwise fix the partition count of the next start."""
    first = Server(data_dir).start()
    fresh = os.path.join(data_dir, "fresh")
    try:
        run = run_server("--listen", first.address, "--data-dir", fresh, "--partitions", "20")
        assert run.returncode != 0
        # In the system's words, not NIO's ("bind(descriptor:ptr:bytes:): ...) (errno: 98)").
        assert f"cannot listen on {first.address} (--listen or ORDERS_LISTEN): Address already in use\n".encode() \
            in run.stderr, run.stderr
        assert not os.path.exists(fresh)
    finally:
        first.kill(signal.SIGTERM)


def test_sighup_drains_and_stops_like_sigterm(data_dir):
    server = Server(data_dir).start()
    os.kill(server.proc.pid, signal.SIGHUP)
    assert server.proc.wait(timeout=30) == 0
    server.kill()


def test_a_second_signal_stops_without_waiting_out_the_grace_period(data_dir, pb):
    """The first SIGTERM drains: in-flight calls get 10 s. The operator who sends another
    does not want to wait: the server cancels them and stops at once, exit 0 as after a
    drain (the engine is still closed as usual)."""
    server = Server(data_dir).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb.g.OrderServiceStub(channel)
            order_id = place(stub, pb).order_id
            # A version the order never reaches: the call waits for its deadline, in flight.
            waiting = stub.GetOrder.future(pb.m.GetOrderRequest(order_id=order_id, min_version=9), timeout=60)
            time.sleep(0.5)  # for the call to reach the server before its GOAWAY
            os.kill(server.proc.pid, signal.SIGTERM)
            time.sleep(1)
            assert server.proc.poll() is None, "the drain had nothing to wait for"
            os.kill(server.proc.pid, signal.SIGTERM)
            assert server.proc.wait(timeout=3) == 0
            assert waiting.exception().code() == grpc.StatusCode.UNAVAILABLE
        assert "stopping now" in server.log()
    finally:
        server.kill()


@contextlib.contextmanager
def run_as_nobody():
    """The command that runs orders-server as nobody (root only): setpriv, then a copy of the
    binary in a directory nobody can reach, since the checkout may be under one only root
    may enter. The copy goes afterwards."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux) to run the server as nobody")
    copy_dir = tempfile.mkdtemp(prefix="orders-server-bin-")
    try:
        os.chmod(copy_dir, 0o755)
        executable = shutil.copy2(binary("orders-server", "ORDERS_SERVER_BIN"), copy_dir)
        yield [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", executable]
    finally:
        shutil.rmtree(copy_dir, ignore_errors=True)


def test_an_unprivileged_user_is_served(data_dir, pb):
    """Run by an ordinary user (root here drops to nobody), the server closed every
    connection it accepted: it asked for TCP_NODELAY at the socket level, where that number
    is SO_DEBUG, which only CAP_NET_ADMIN may set (as root it set SO_DEBUG, and Nagle's
    algorithm stayed on)."""
    unprivileged = run_as_nobody() if os.geteuid() == 0 else contextlib.nullcontext(
        [binary("orders-server", "ORDERS_SERVER_BIN")])
    with unprivileged as command:
        if os.geteuid() == 0:
            os.chown(data_dir, 65534, 65534)
        server = subprocess.Popen(
            command + ["--listen", "127.0.0.1:0", "--data-dir", data_dir, "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            line = server.stdout.readline().decode()
            assert "listening on port" in line, line
            with grpc.insecure_channel(f"127.0.0.1:{line.rsplit(' ', 1)[1].strip()}") as channel:
                assert place(pb.g.OrderServiceStub(channel), pb).order.version == 1
        finally:
            server.kill()
            server.wait()
            server.stdout.close()


def test_data_files_another_user_owns_stop_the_start_naming_them(data_dir):
    """A directory first served as root, then by a service user who was given the directory
    and its LOCK but not the data files. The server started on them, said SERVING, and
    failed every command (UNAVAILABLE: "attempt to write a readonly database"); it now stops
    at start naming the files and what to do."""
    with run_as_nobody() as command:
        Server(data_dir).start().kill(signal.SIGTERM)
        os.chmod(data_dir, 0o777)
        os.chmod(os.path.join(data_dir, "LOCK"), 0o666)
        proc = subprocess.Popen(
            command + ["--listen", "127.0.0.1:0", "--data-dir", data_dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"started on data files it cannot write: {out!r}")
    assert proc.returncode == 1, err
    assert f"{data_dir}/log.sqlite".encode() in err, err
    assert b"not writable by this user" in err and b"owned by uid 0" in err, err
