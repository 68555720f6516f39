"""The seed's scenario through the `orders` CLI against the real server."""
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import DRIVER, RIDER, Server, binary, free_port

STOPS = ["--stop", "Київ, вулиця Полярна, 17А;50.51980052414157;30.467197278948536",
         "--stop", "Київ, вулиця Новокостянтинівська, 18В;50.48509161169076;30.485170724431292"]


def orders(server, *args, json_out=False):
    cmd = [binary("orders", "ORDERS_CLI_BIN"), "--server", server.address]
    if json_out:
        cmd.append("--json")
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=30)


def test_seed_scenario_through_the_cli(server):
    placed = orders(server, "place", "--rider", RIDER, "--price", "123.45", *STOPS, json_out=True)
    assert placed.returncode == 0, placed.stderr
    order_id = json.loads(placed.stdout)["orderId"]

    got = orders(server, "get", order_id)
    assert got.returncode == 0 and "PLACED" in got.stdout and "123.45" in got.stdout

    accepted = orders(server, "accept", order_id, "--driver", DRIVER, "--version", "1", json_out=True)
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["order"]["status"] == "ORDER_STATUS_ACCEPTED"

    stale = orders(server, "cancel", order_id, "--version", "1")
    assert stale.returncode == 10, (stale.returncode, stale.stderr)  # ABORTED
    assert "ABORTED" in stale.stderr and "expected_version=1" in stale.stderr

    completed = orders(server, "complete", order_id, "--version", "2", json_out=True)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["order"]["version"] == 3

    refused = orders(server, "cancel", order_id, "--version", "3")
    assert refused.returncode == 9, (refused.returncode, refused.stderr)  # FAILED_PRECONDITION
    assert "FAILED_PRECONDITION" in refused.stderr and "COMPLETED" in refused.stderr

    events = orders(server, "events", order_id, json_out=True)
    assert events.returncode == 0, events.stderr
    history = [e for line in events.stdout.splitlines() if line.strip()
               for e in (json.loads(line).get("events") or [json.loads(line)])]
    types = [e["eventType"] for e in history]
    assert types == ["OrderPlacedEvent", "OrderAcceptedEvent", "ErrorEvent", "OrderCompletedEvent", "ErrorEvent"]
    assert [e.get("version") for e in history if e["eventType"] != "ErrorEvent"] == [1, 2, 3]

    listed = orders(server, "list", "--status", "completed")
    assert listed.returncode == 0 and order_id in listed.stdout


def test_cli_get_shows_why_each_error_was_refused(server):
    placed = orders(server, "place", "--rider", RIDER, "--price", "7", *STOPS, json_out=True)
    order_id = json.loads(placed.stdout)["orderId"]
    assert orders(server, "complete", order_id, "--version", "1").returncode == 9  # FAILED_PRECONDITION
    assert orders(server, "cancel", order_id, "--version", "4").returncode == 10  # ABORTED
    got = orders(server, "get", order_id)
    assert got.returncode == 0, got.stderr
    lines = [line for line in got.stdout.splitlines() if "expected_version=" in line]
    assert len(lines) == 2, got.stdout
    assert "CompleteOrder expected_version=1 actual_version=1 reason=TRANSITION_NOT_ALLOWED" in lines[0]
    assert "CancelOrder expected_version=4 actual_version=1 reason=VERSION_MISMATCH" in lines[1]


def test_cli_errors_are_clear(server):
    bad = orders(server, "place", "--rider", "nobody", "--price", "1", *STOPS)
    assert bad.returncode == 3 and "INVALID_ARGUMENT" in bad.stderr and "rider_id" in bad.stderr
    missing = orders(server, "get", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 5 and "NOT_FOUND" in missing.stderr
    usage = orders(server, "place", "--rider", RIDER, "--price", "1", "--stop", "no-coordinates")
    assert usage.returncode == 64


def test_cli_watch_streams_history_then_live(server):
    placed = orders(server, "place", "--rider", RIDER, "--price", "5", *STOPS, json_out=True)
    order_id = json.loads(placed.stdout)["orderId"]
    watch = subprocess.Popen([binary("orders", "ORDERS_CLI_BIN"), "--server", server.address, "--json", "watch",
                              "--from-start", "--order", order_id], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while True:
            line = watch.stdout.readline()
            assert line, "watch ended early"
            item = json.loads(line)
            if "heartbeat" in item:
                continue
            lines.append(item)
            if "caughtUp" in item:
                break
        assert lines[0]["event"]["eventType"] == "OrderPlacedEvent"
        assert orders(server, "cancel", order_id, "--version", "1").returncode == 0
        while True:
            item = json.loads(watch.stdout.readline())
            if "event" in item:
                assert item["event"]["eventType"] == "OrderCancelledEvent"
                break
    finally:
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=10) == 0


# ---- without a real server: a listener that misbehaves, and usage errors ----

def cli(*args, env=None, timeout=30):
    environment = dict(os.environ)
    environment.pop("ORDERS_SERVER", None)
    environment.update(env or {})
    return subprocess.run([binary("orders", "ORDERS_CLI_BIN"), *args], capture_output=True, text=True,
                          timeout=timeout, env=environment)


class Listener:
    """A TCP listener on 127.0.0.1 that reads what a client sends, then resets the
    connection after half a second ("reset": the request went out, the answer never came)
    or never answers at all ("hang": a server that is stopped or stuck)."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopped = threading.Event()
        self.connections = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections.append(conn)
            if self.mode == "reset":
                conn.settimeout(0.5)
                try:
                    while conn.recv(65536):
                        pass
                except socket.timeout:
                    pass
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()
        self.sock.close()
        for conn in self.connections:
            conn.close()


def test_cli_command_whose_answer_is_lost_names_its_request_id():
    """The request went out and the connection broke: the command may have been applied,
    so the report gives the request id to retry with instead of inviting a duplicate."""
    with Listener("reset") as listener:
        placed = cli("--server", listener.address, "place", "--rider", RIDER, "--price", "1", *STOPS)
        assert placed.returncode == 14, placed.stderr  # UNAVAILABLE
        match = re.search(r"--request-id ([0-9a-f-]{36})\b", placed.stderr)
        assert match, placed.stderr
        cancelled = cli("--server", listener.address, "cancel", "5ea059ac-63a7-5009-8cfe-9e5fd9da9126",
                        "--version", "1", "--request-id", "r-77")
        assert cancelled.returncode == 14 and "--request-id r-77 " in cancelled.stderr, cancelled.stderr
    # Nothing listening: the request certainly never left, no hint.
    refused = cli("--server", f"127.0.0.1:{free_port()}", "place", "--rider", RIDER, "--price", "1", *STOPS)
    assert refused.returncode == 14 and "cannot reach" in refused.stderr, refused.stderr
    assert "--request-id" not in refused.stderr


def test_cli_watch_gives_up_on_a_server_that_sends_nothing():
    """No event and no heartbeat (the server sends one every 5 s) for 15 s: UNAVAILABLE."""
    with Listener("hang") as listener:
        start = time.monotonic()
        watch = cli("--server", listener.address, "watch", "--from-end", timeout=40)
        elapsed = time.monotonic() - start
    assert watch.returncode == 14, watch.stderr
    assert "not even a heartbeat" in watch.stderr
    assert 14 <= elapsed < 25, elapsed


MALFORMED_ADDRESSES = ["http://127.0.0.1:50051", "127.0.0.1:50051?", "127.0.0.1:50051#x", "user@127.0.0.1:50051",
                       "127.0.0.1 :50051", "127.0.0.1:50051/x", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0",
                       "127.0.0.1:65536", "127.0.0.1:5o", "::1:50051", "[::1]", "[::1:50051", ":50051"]


@pytest.mark.parametrize("address", MALFORMED_ADDRESSES)
def test_cli_refuses_a_malformed_server_address_from_either_source(address):
    order_id = "5ea059ac-63a7-5009-8cfe-9e5fd9da9126"
    flag = cli("--server", address, "get", order_id)
    assert flag.returncode == 64 and "--server must be HOST:PORT" in flag.stderr, (flag.returncode, flag.stderr)
    from_env = cli("get", order_id, env={"ORDERS_SERVER": address})
    assert from_env.returncode == 64 and "ORDERS_SERVER must be HOST:PORT" in from_env.stderr, \
        (from_env.returncode, from_env.stderr)


def test_cli_accepts_well_formed_server_addresses():
    order_id = "5ea059ac-63a7-5009-8cfe-9e5fd9da9126"
    port = free_port()
    for address in [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]:
        result = cli("--server", address, "get", order_id)
        assert result.returncode == 14 and "cannot reach" in result.stderr, (address, result.stderr)
    # --server wins over a malformed ORDERS_SERVER.
    result = cli("--server", f"127.0.0.1:{port}", "get", order_id, env={"ORDERS_SERVER": "http://x"})
    assert result.returncode == 14, result.stderr


def test_cli_escapes_control_characters_except_in_json(data_dir):
    """Addresses are server data: printed for a terminal, a newline must not start a line
    that looks like an event of its own, nor an ESC drive the terminal."""
    server = Server(data_dir).start()
    try:
        forged = "A\n00000000-0000-0000-0000-000000000000  v9   OrderCancelledEvent  position=v1:forged"
        escape = "B\x1b[2J\x1b]0;title\x07\rC"
        placed = cli("--server", server.address, "--json", "place", "--rider", RIDER, "--price", "1",
                     "--stop", f"{forged};1;1", "--stop", f"{escape};2;2")
        assert placed.returncode == 0, placed.stderr
        order_id = json.loads(placed.stdout)["orderId"]

        got = cli("--server", server.address, "get", order_id)
        assert got.returncode == 0, got.stderr
        for raw in ["\x1b", "\x07", "\r"]:
            assert raw not in got.stdout
        assert "A\\n00000000-0000" in got.stdout and "B\\u{1B}[2J\\u{1B}]0;title\\u{7}\\rC" in got.stdout
        assert not any(line.startswith("00000000-0000") for line in got.stdout.splitlines())

        events = cli("--server", server.address, "events", order_id)
        assert events.returncode == 0, events.stderr
        assert len(events.stdout.splitlines()) == 1, events.stdout  # one event, one line
        assert "\x1b" not in events.stdout

        as_json = cli("--server", server.address, "--json", "get", order_id)
        assert [w["address"] for w in json.loads(as_json.stdout)["route"]] == [forged, escape]
    finally:
        server.kill(signal.SIGTERM)


@pytest.mark.parametrize("run", range(3))
def test_cli_watch_reports_unavailable_when_the_server_shuts_down(data_dir, run):
    """SIGTERM ends subscriptions with UNAVAILABLE so subscribers resume elsewhere. The server
    announces the shutdown (GOAWAY) before that status, and libcurl 7.88 drops the trailers of
    a stream that ends after a GOAWAY reached it (whatever the frames' order): the CLI must
    still say UNAVAILABLE (retryable, resume with --after), not INTERNAL. Three runs, as in the
    review's repro, where every run ended in INTERNAL."""
    server = Server(data_dir).start()
    watch = subprocess.Popen([binary("orders", "ORDERS_CLI_BIN"), "--server", server.address, "--json", "watch",
                              "--from-end"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while "caughtUp" not in (line := watch.stdout.readline()):
            assert line, "watch ended early: " + watch.stderr.read()
        position = json.loads(line)["caughtUp"]["position"]
        os.kill(server.proc.pid, signal.SIGTERM)
        _, stderr = watch.communicate(timeout=20)
        assert watch.returncode == 14, stderr  # UNAVAILABLE
        assert "error: UNAVAILABLE" in stderr and f"--after {position}" in stderr, stderr
        assert server.proc.wait(timeout=20) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        server.kill()


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_frames(data):
    """(type, stream id) of each complete frame after the 24-byte client preface."""
    at, frames = 24, []
    while at + 9 <= len(data) and at + 9 + int.from_bytes(data[at:at + 3], "big") <= len(data):
        frames.append((data[at + 3], int.from_bytes(data[at + 5:at + 9], "big") & 0x7FFFFFFF))
        at += 9 + int.from_bytes(data[at:at + 3], "big")
    return frames


def hpack_literals(*fields):
    """HPACK literal fields without indexing, no Huffman (lengths under 127)."""
    return b"".join(b"\x00" + bytes([len(n)]) + n.encode() + bytes([len(v)]) + v.encode() for n, v in fields)


def test_cli_watch_reports_unavailable_when_trailers_come_just_before_goaway():
    """The same loss with the frames the other way round: trailers (grpc-status 14), then
    GOAWAY, in one write. libcurl 7.88 still drops the status, so no order of the server's
    frames could fix this on its side; the CLI answers UNAVAILABLE."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)

    def serve():
        conn, _ = sock.accept()
        with conn:
            received = b""
            while not (data := [sid for kind, sid in h2_frames(received) if kind == 0]):  # the request's DATA
                chunk = conn.recv(65536)
                if not chunk:
                    return
                received += chunk
            stream = data[0]
            conn.sendall(h2_frame(4, 0, 0) + h2_frame(4, 1, 0)  # SETTINGS, ACK of the client's
                         + h2_frame(1, 4, stream, b"\x88" + hpack_literals(("content-type", "application/grpc"))))
            time.sleep(0.5)
            conn.sendall(h2_frame(1, 5, stream, hpack_literals(("grpc-status", "14"), ("grpc-message", "bye")))
                         + h2_frame(7, 0, 0, struct.pack(">II", stream, 0)))
            time.sleep(1)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        watch = cli("--server", f"127.0.0.1:{sock.getsockname()[1]}", "watch", "--from-end", timeout=20)
    finally:
        server.join(5)
        sock.close()
    assert watch.returncode == 14 and "error: UNAVAILABLE" in watch.stderr, watch.stderr
