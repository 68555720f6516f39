"""Misbehaving clients. After each, the server must still serve other connections and its
memory must stay bounded."""

import socket
import threading
import time

import grpc
import pytest

import h2raw
from conftest import start_server, stop_server

# A stalled stream may hold about 64 KiB in the server plus whatever nghttp2 and the kernel
# buffer; this bound is far below what the misbehaving clients below would otherwise cost
# (hundreds of MiB).
RSS_GROWTH_LIMIT_KIB = 64 * 1024


@pytest.fixture(scope="module")
def abuse_server():
    s = start_server("--idle-timeout-seconds", "1")
    yield s
    stop_server(s)


def assert_still_serving(server, stubs):
    assert server.alive()
    with grpc.insecure_channel(server.address) as channel:
        stub = stubs.test.TestServiceStub(channel)
        assert stub.EmptyCall(stubs.empty.Empty(), timeout=10).ByteSize() == 0
        request = stubs.messages.StreamingOutputCallRequest(
            response_parameters=[stubs.messages.ResponseParameters(size=10_000) for _ in range(20)]
        )
        assert len(list(stub.StreamingOutputCall(request, timeout=10))) == 20


def warm_up(server, stubs):
    assert_still_serving(server, stubs)
    return server.rss_kib()


def test_thousand_streams_opened_and_reset_at_once(abuse_server, stubs):
    baseline = warm_up(abuse_server, stubs)
    for _ in range(3):
        sock = h2raw.connect(abuse_server.address)
        burst = [h2raw.PREFACE, h2raw.settings()]
        for i in range(1000):
            stream = 2 * i + 1
            burst.append(h2raw.grpc_request_headers(stream, "/grpc.testing.TestService/FullDuplexCall"))
            burst.append(h2raw.frame(h2raw.RST_STREAM, 0, stream, (h2raw.CANCEL).to_bytes(4, "big")))
        sock.sendall(b"".join(burst))
        frames = h2raw.read_frames(sock, timeout=5)
        sock.close()
        # The server answered at the HTTP/2 level (SETTINGS at least), then either kept the
        # connection or ended it with GOAWAY (nghttp2's rapid-reset limit).
        assert any(f[0] == h2raw.SETTINGS for f in frames)
    assert_still_serving(abuse_server, stubs)
    assert abuse_server.rss_kib() - baseline < RSS_GROWTH_LIMIT_KIB


def test_client_that_never_reads_a_server_stream(abuse_server, stubs):
    baseline = warm_up(abuse_server, stubs)
    # Asks for 400 MiB (4,000 responses of 100 KiB) and then never reads a byte.
    request = stubs.messages.StreamingOutputCallRequest(
        response_parameters=[stubs.messages.ResponseParameters(size=100 * 1024) for _ in range(4000)]
    )
    sock = h2raw.connect(abuse_server.address)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(
        h2raw.PREFACE + h2raw.settings()
        + h2raw.grpc_request_headers(1, "/grpc.testing.TestService/StreamingOutputCall")
        + h2raw.frame(h2raw.DATA, h2raw.END_STREAM, 1, h2raw.grpc_message(request.SerializeToString()))
    )
    # A gRPC client on the same server, whose stream the stalled one must not slow down:
    # it still gets its own stream promptly, on another connection and on a channel that
    # holds an unread stream of its own.
    with grpc.insecure_channel(abuse_server.address) as channel:
        stub = stubs.test.TestServiceStub(channel)
        unread = stub.StreamingOutputCall(request)  # never iterated
        peak = 0
        for _ in range(6):
            time.sleep(0.5)
            started = time.monotonic()
            assert stub.EmptyCall(stubs.empty.Empty(), timeout=5).ByteSize() == 0
            assert time.monotonic() - started < 2
            peak = max(peak, abuse_server.rss_kib())
        unread.cancel()
    sock.close()
    print(f"never-read: baseline {baseline} KiB, peak {peak} KiB")
    assert peak - baseline < RSS_GROWTH_LIMIT_KIB, f"RSS grew by {peak - baseline} KiB"
    assert_still_serving(abuse_server, stubs)


def test_sixteen_mib_message_is_resource_exhausted(abuse_server, stubs):
    baseline = warm_up(abuse_server, stubs)
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(abuse_server.address, options=options) as channel:
        stub = stubs.test.TestServiceStub(channel)
        big = stubs.messages.SimpleRequest(payload=stubs.messages.Payload(body=b"\0" * (16 << 20)))
        with pytest.raises(grpc.RpcError) as error:
            stub.UnaryCall(big, timeout=30)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_serving(abuse_server, stubs)
    # The limit is checked on the length prefix: the 16 MiB were never buffered.
    assert abuse_server.rss_kib() - baseline < 16 * 1024


def test_garbage_instead_of_preface(abuse_server, stubs):
    for garbage in [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 64]:
        sock = h2raw.connect(abuse_server.address)
        sock.sendall(garbage)
        sock.settimeout(5)
        # The server hangs up (recv returns EOF, or the reset shows up as an error).
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        sock.close()
    assert_still_serving(abuse_server, stubs)


def test_connections_that_send_nothing(abuse_server, stubs):
    silent = [h2raw.connect(abuse_server.address) for _ in range(50)]
    # Others are served meanwhile.
    assert_still_serving(abuse_server, stubs)
    # And the idle timeout (1 s here) ends the silent ones: GOAWAY, then EOF.
    deadline = time.monotonic() + 10
    for sock in silent:
        frames = h2raw.read_frames(sock, timeout=max(0.1, deadline - time.monotonic()))
        assert any(f[0] == h2raw.GOAWAY for f in frames), frames
        sock.close()
    assert_still_serving(abuse_server, stubs)
