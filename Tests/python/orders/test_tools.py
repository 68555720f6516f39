"""Outside tools against the real server: buf curl through reflection, grpc+json with
curl, health."""
import json
import os
import shutil
import subprocess
import uuid

import pytest

from conftest import place


def buf():
    path = shutil.which("buf")
    if not path:
        pytest.fail("buf is not installed (pip install buf-bin; Scripts/test.sh does)")
    return path


def test_buf_curl_get_order_through_reflection(stub, pb, server):
    order_id = place(stub, pb).order_id
    out = subprocess.run(
        [buf(), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--data", json.dumps({"order_id": order_id}),
         f"http://{server.address}/ridehailing.orders.v1.OrderService/GetOrder"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["id"] == order_id and body["status"] == "ORDER_STATUS_PLACED" and body["version"] == 1


def test_buf_curl_lists_services(server):
    out = subprocess.run([buf(), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods",
                          f"http://{server.address}"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ridehailing.orders.v1.OrderService/StreamEvents" in out.stdout


def test_grpc_json_codec_with_curl(server):
    """application/grpc+json on the same endpoint, unknown JSON fields refused."""
    def call(body: bytes):
        frame = b"\x00" + len(body).to_bytes(4, "big") + body
        return subprocess.run(
            ["curl", "-s", "--http2-prior-knowledge", "-X", "POST", "-H", "content-type: application/grpc+json",
             "-H", "te: trailers", "--data-binary", "@-", "-D", "-", "-o", "/dev/stderr",
             f"http://{server.address}/ridehailing.orders.v1.OrderService/PlaceOrder"],
            input=frame, capture_output=True, timeout=30)

    request = {"requestId": str(uuid.uuid4()), "riderId": "63770803-38f4-4594-aec2-4c74918f7165", "price": "10.00",
               "route": [{"address": "A", "lat": 1, "lon": 2}, {"address": "B", "lat": 3, "lon": 4}]}
    ok = call(json.dumps(request).encode())
    assert b"grpc-status: 0" in ok.stdout, ok.stdout
    payload = json.loads(ok.stderr[5:])
    assert payload["order"]["status"] == "ORDER_STATUS_PLACED"
    request["route"][0] = {"address": "A", "lat": 1, "lng": 2}  # the seed's old typo
    bad = call(json.dumps(request).encode())
    assert b"grpc-status: 0" not in bad.stdout
    assert b"grpc-status: 3" in bad.stdout or b"grpc-status: 13" in bad.stdout, bad.stdout


def test_buf_lint_passes_on_the_contract():
    """Teams that generate clients lint the .proto with buf: Protos/buf.yaml says which of
    the STANDARD rules the contract departs from, and why, so their runs pass."""
    protos = os.path.join(os.path.dirname(__file__), "..", "..", "..", "Protos")
    out = subprocess.run([buf(), "lint"], cwd=protos, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
