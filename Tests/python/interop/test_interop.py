"""grpc interop cases (grpc/doc/interop-test-descriptions.md) against the Swift server, plus
health, reflection (v1 and v1alpha), buf curl through reflection, and grpc+json with curl."""

import json
import queue
import shutil
import struct
import subprocess
import threading

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as reflection_v1alpha_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def payload(stubs, size):
    return stubs.messages.Payload(body=b"\0" * size)


# ---- interop cases -------------------------------------------------------------------------


def test_empty_unary(stub, stubs):
    response = stub.EmptyCall(stubs.empty.Empty())
    assert response.ByteSize() == 0


def test_large_unary(stub, stubs):
    request = stubs.messages.SimpleRequest(response_size=314159, payload=payload(stubs, 271828))
    response = stub.UnaryCall(request)
    assert len(response.payload.body) == 314159


def test_client_streaming(stub, stubs):
    sizes = [27182, 8, 1828, 45904]
    requests = (stubs.messages.StreamingInputCallRequest(payload=payload(stubs, n)) for n in sizes)
    response = stub.StreamingInputCall(requests)
    assert response.aggregated_payload_size == 74922


def test_server_streaming(stub, stubs):
    sizes = [31415, 9, 2653, 58979]
    request = stubs.messages.StreamingOutputCallRequest(
        response_parameters=[stubs.messages.ResponseParameters(size=n) for n in sizes]
    )
    responses = list(stub.StreamingOutputCall(request))
    assert [len(r.payload.body) for r in responses] == sizes


def test_server_streaming_honours_interval(stub, stubs):
    request = stubs.messages.StreamingOutputCallRequest(
        response_parameters=[stubs.messages.ResponseParameters(size=1, interval_us=100_000) for _ in range(3)]
    )
    import time

    started = time.monotonic()
    assert len(list(stub.StreamingOutputCall(request))) == 3
    assert time.monotonic() - started >= 0.3


class _Requests:
    """A request iterator the test feeds one message at a time (true ping-pong)."""

    def __init__(self):
        self.q = queue.Queue()

    def send(self, message):
        self.q.put(message)

    def close(self):
        self.q.put(None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.q.get(timeout=30)
        if item is None:
            raise StopIteration
        return item


def test_ping_pong(stub, stubs):
    pairs = [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)]
    requests = _Requests()
    call = stub.FullDuplexCall(requests)
    for response_size, request_size in pairs:
        requests.send(
            stubs.messages.StreamingOutputCallRequest(
                response_parameters=[stubs.messages.ResponseParameters(size=response_size)],
                payload=payload(stubs, request_size),
            )
        )
        response = next(call)
        assert len(response.payload.body) == response_size
    requests.close()
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


def test_empty_stream(stub):
    call = stub.FullDuplexCall(iter([]))
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


def test_custom_metadata(stub, stubs):
    metadata = (("x-grpc-test-echo-initial", "test_initial_metadata_value"), ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab"))
    request = stubs.messages.SimpleRequest(response_size=314159, payload=payload(stubs, 271828))
    response, call = stub.UnaryCall.with_call(request, metadata=metadata)
    assert len(response.payload.body) == 314159
    assert ("x-grpc-test-echo-initial", "test_initial_metadata_value") in call.initial_metadata()
    assert ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab") in call.trailing_metadata()

    stream = stub.FullDuplexCall(
        iter([stubs.messages.StreamingOutputCallRequest(response_parameters=[stubs.messages.ResponseParameters(size=314159)], payload=payload(stubs, 271828))]),
        metadata=metadata,
    )
    assert [len(r.payload.body) for r in stream] == [314159]
    assert ("x-grpc-test-echo-initial", "test_initial_metadata_value") in stream.initial_metadata()
    assert ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab") in stream.trailing_metadata()


@pytest.mark.parametrize("message", ["test status message", "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"])
def test_status_code_and_message(stub, stubs, message):
    # The second message is the special_status_message case (percent-encoding round trip).
    status = stubs.messages.EchoStatus(code=2, message=message)
    with pytest.raises(grpc.RpcError) as error:
        stub.UnaryCall(stubs.messages.SimpleRequest(response_status=status))
    assert error.value.code() == grpc.StatusCode.UNKNOWN
    assert error.value.details() == message

    call = stub.FullDuplexCall(iter([stubs.messages.StreamingOutputCallRequest(response_status=status)]))
    with pytest.raises(grpc.RpcError) as error:
        list(call)
    assert error.value.code() == grpc.StatusCode.UNKNOWN
    assert error.value.details() == message


def test_unimplemented_method(stub, stubs):
    with pytest.raises(grpc.RpcError) as error:
        stub.UnimplementedCall(stubs.empty.Empty())
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unimplemented_service(channel, stubs):
    with pytest.raises(grpc.RpcError) as error:
        stubs.test.UnimplementedServiceStub(channel).UnimplementedCall(stubs.empty.Empty())
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_cancel_after_begin(stub):
    requests = _Requests()
    future = stub.StreamingInputCall.future(requests)
    future.cancel()
    assert future.cancelled()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    requests.close()


def test_cancel_after_first_response(stub, stubs):
    requests = _Requests()
    call = stub.FullDuplexCall(requests)
    requests.send(
        stubs.messages.StreamingOutputCallRequest(
            response_parameters=[stubs.messages.ResponseParameters(size=31415)], payload=payload(stubs, 27182)
        )
    )
    assert len(next(call).payload.body) == 31415
    call.cancel()
    assert call.code() == grpc.StatusCode.CANCELLED
    requests.close()


def test_timeout_on_sleeping_server(stub, stubs):
    requests = _Requests()
    call = stub.FullDuplexCall(requests, timeout=0.001)
    requests.send(stubs.messages.StreamingOutputCallRequest(payload=payload(stubs, 27182)))
    with pytest.raises(grpc.RpcError) as error:
        list(call)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    requests.close()


def test_client_compressed_unary(stub, stubs):
    expect = stubs.messages.BoolValue(value=True)
    probe = stubs.messages.SimpleRequest(response_size=314159, payload=payload(stubs, 271828), expect_compressed=expect)
    with pytest.raises(grpc.RpcError) as error:
        stub.UnaryCall(probe)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    response = stub.UnaryCall(probe, compression=grpc.Compression.Gzip)
    assert len(response.payload.body) == 314159

    plain = stubs.messages.SimpleRequest(
        response_size=314159, payload=payload(stubs, 271828), expect_compressed=stubs.messages.BoolValue(value=False)
    )
    assert len(stub.UnaryCall(plain).payload.body) == 314159


@pytest.mark.parametrize("compressed", [True, False])
def test_server_compressed_unary(stub, stubs, compressed):
    request = stubs.messages.SimpleRequest(
        response_size=314159, payload=payload(stubs, 271828), response_compressed=stubs.messages.BoolValue(value=compressed)
    )
    assert len(stub.UnaryCall(request).payload.body) == 314159


def _nghttp(server, path, body, *headers, timeout=10):
    """Runs nghttp with a framed body; returns (stdout bytes, verbose stderr text)."""
    args = ["nghttp", "-v", "-H", ":method: POST", "-H", "te: trailers"]
    for header in headers:
        args += ["-H", header]
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        f.write(body)
        f.flush()
        result = subprocess.run(args + ["-d", f.name, f"http://{server.address}{path}"], capture_output=True, timeout=timeout)
    return result.stdout, result.stdout.decode(errors="replace")


def test_server_compressed_response_is_really_gzip(server, stubs):
    """The response message carries the compressed flag only when the client accepts gzip."""
    request = stubs.messages.SimpleRequest(response_size=1000, response_compressed=stubs.messages.BoolValue(value=True))
    body = request.SerializeToString()
    framed = struct.pack(">BI", 0, len(body)) + body
    _, verbose = _nghttp(server, "/grpc.testing.TestService/UnaryCall", framed, "content-type: application/grpc", "grpc-accept-encoding: gzip")
    assert "grpc-encoding: gzip" in verbose
    assert "grpc-status: 0" in verbose
    _, verbose = _nghttp(server, "/grpc.testing.TestService/UnaryCall", framed, "content-type: application/grpc")
    assert "grpc-encoding" not in verbose
    assert "grpc-status: 0" in verbose


# ---- health --------------------------------------------------------------------------------


def test_health_check(channel):
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service="grpc.testing.TestService")).status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as error:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watch(channel):
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest())
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    unknown = health.Watch(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert next(unknown).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    unknown.cancel()


# ---- reflection ----------------------------------------------------------------------------

EXPECTED_SERVICES = {
    "grpc.testing.TestService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


def test_reflection_v1alpha_with_grpcio_reflection_client(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    assert EXPECTED_SERVICES <= set(database.get_services())
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("grpc.testing.TestService")
    assert {m.name for m in service.methods} >= {"EmptyCall", "UnaryCall", "FullDuplexCall"}
    assert pool.FindMethodByName("grpc.testing.TestService.UnaryCall").input_type.full_name == "grpc.testing.SimpleRequest"
    assert pool.FindMessageTypeByName("grpc.testing.SimpleRequest").fields_by_name["payload"].message_type.full_name == "grpc.testing.Payload"
    assert pool.FindEnumTypeByName("grpc.testing.PayloadType").values_by_name["COMPRESSABLE"].number == 0
    # Nested type and the health service through the same database.
    assert pool.FindMessageTypeByName("grpc.testing.LoadBalancerStatsResponse.RpcsByPeer")
    assert pool.FindServiceByName("grpc.health.v1.Health").methods_by_name["Watch"]


def test_reflection_v1alpha_not_found(channel):
    stub = reflection_v1alpha_grpc.ServerReflectionStub(channel)
    request = reflection_v1alpha_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol")
    (response,) = list(stub.ServerReflectionInfo(iter([request])))
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_reflection_v1(channel, stubs):
    from google.protobuf import descriptor_pb2

    r = stubs.reflection_v1
    stub = stubs.reflection_v1_grpc.ServerReflectionStub(channel)
    requests = [
        r.ServerReflectionRequest(list_services=""),
        r.ServerReflectionRequest(file_containing_symbol="grpc.testing.TestService.EmptyCall"),
        r.ServerReflectionRequest(file_by_filename="grpc/testing/messages.proto"),
        r.ServerReflectionRequest(file_by_filename="nope.proto"),
        r.ServerReflectionRequest(file_containing_symbol="grpc.testing.Nope"),
    ]
    responses = list(stub.ServerReflectionInfo(iter(requests)))
    assert EXPECTED_SERVICES <= {s.name for s in responses[0].list_services_response.service}
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in responses[1].file_descriptor_response.file_descriptor_proto]
    assert files[0].name == "grpc/testing/test.proto"
    # Dependencies come along, named by their import paths.
    assert set(files[0].dependency) <= {f.name for f in files}
    assert {"grpc/testing/empty.proto", "grpc/testing/messages.proto"} <= {f.name for f in files}
    # Already sent on this stream: only the requested file comes back.
    again = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in responses[2].file_descriptor_response.file_descriptor_proto]
    assert [f.name for f in again] == ["grpc/testing/messages.proto"]
    assert responses[3].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert responses[4].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


@pytest.mark.skipif(shutil.which("buf") is None, reason="buf not installed")
def test_buf_curl_through_reflection(server):
    result = subprocess.run(
        ["buf", "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", "{}",
         f"http://{server.address}/grpc.testing.TestService/EmptyCall"],
        capture_output=True, timeout=60, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {}

    result = subprocess.run(
        ["buf", "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", '{"responseSize": 3}',
         f"http://{server.address}/grpc.testing.TestService/UnaryCall"],
        capture_output=True, timeout=60, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"payload": {"body": "AAAA"}}


# ---- application/grpc+json with curl -------------------------------------------------------


def _curl_json(server, path, document, tmp_path):
    body = json.dumps(document).encode()
    request = tmp_path / "request.bin"
    request.write_bytes(struct.pack(">BI", 0, len(body)) + body)
    result = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-X", "POST", "-D", "-", "-o", str(tmp_path / "response.bin"),
         "-H", "content-type: application/grpc+json", "-H", "te: trailers",
         "--data-binary", f"@{request}", f"http://{server.address}{path}"],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode(), (tmp_path / "response.bin").read_bytes()


def test_grpc_json_with_curl(server, tmp_path):
    headers, body = _curl_json(server, "/grpc.testing.TestService/UnaryCall", {"responseSize": 4}, tmp_path)
    assert "content-type: application/grpc+json" in headers
    assert "grpc-status: 0" in headers  # curl -D prints the trailers after the headers
    flag, length = struct.unpack(">BI", body[:5])
    assert flag == 0 and length == len(body) - 5
    assert json.loads(body[5:]) == {"payload": {"body": "AAAAAA=="}}


def test_grpc_json_rejects_unknown_fields(server, tmp_path):
    headers, body = _curl_json(server, "/grpc.testing.TestService/UnaryCall", {"responseSize": 4, "bogus": 1}, tmp_path)
    assert "grpc-status: 3" in headers
    assert body == b""
