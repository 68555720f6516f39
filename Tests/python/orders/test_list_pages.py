"""ListOrders pages are bounded in bytes, not only in orders: 45 orders at the validation
maxima used to make the default page 4.6 MB, which a stock grpcio channel (4 MiB receive
limit) refused with RESOURCE_EXHAUSTED (found by a client team's review)."""
import json
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from conftest import RIDER, Server

ORDERS = 49
ESCAPED = 4  # of them with addresses of control characters
MIB = 1 << 20


@pytest.fixture(scope="module")
def listed(pb, tmp_path_factory):
    """An embedded server holding ORDERS orders at the validation maxima: 100 waypoints with
    1,000-byte addresses (about 100 KB each in protobuf). In ESCAPED of them every address
    byte is a control character, 6 bytes in JSON (`\\u0001`): about 600 KB each there."""
    server = Server(str(tmp_path_factory.mktemp("list-pages"))).start()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb.g.OrderServiceStub(channel)

        def place(i):
            address = "\x01" * 1000 if i < ESCAPED else "a" * 1000
            route = [pb.m.Waypoint(address=address, lat=-89.123456789, lon=-179.123456789) for _ in range(100)]
            return stub.PlaceOrder(pb.m.PlaceOrderRequest(
                request_id=str(uuid.uuid4()), rider_id=RIDER, price="123.45", route=route), timeout=30).order_id

        with ThreadPoolExecutor(8) as pool:
            ids = set(pool.map(place, range(ORDERS)))
    assert len(ids) == ORDERS
    try:
        yield server, ids
    finally:
        server.kill()


def read_all(call):
    """Every page of a listing, following next_page_token; `call(token)` returns a page."""
    pages, token = [], ""
    while True:
        page = call(token)
        pages.append(page)
        token = page["next_page_token"]
        if not token or len(pages) > ORDERS:
            return pages


@pytest.mark.parametrize("page_size", [0, 1000])
def test_maximal_orders_list_through_a_stock_grpcio_channel(listed, pb, page_size):
    server, ids = listed
    with grpc.insecure_channel(server.address) as channel:  # default options: 4 MiB receive limit
        stub = pb.g.OrderServiceStub(channel)

        def call(token):
            res = stub.ListOrders(pb.m.ListOrdersRequest(page_size=page_size, page_token=token), timeout=30)
            return {"orders": [o.id for o in res.orders], "next_page_token": res.next_page_token,
                    "bytes": res.ByteSize()}

        pages = read_all(call)
    listed_ids = [i for p in pages for i in p["orders"]]
    assert len(listed_ids) == ORDERS and set(listed_ids) == ids  # every order exactly once
    assert all(p["orders"] and p["bytes"] <= MIB + 64 for p in pages), [(len(p["orders"]), p["bytes"]) for p in pages]
    assert len(pages) > 1


def test_maximal_orders_list_in_json_pages_under_the_budget(listed):
    """application/grpc+json: the budget holds in the codec of the call, where the escaped
    orders take six times their protobuf bytes, so pages hold fewer orders."""
    server, ids = listed

    def call(token):
        body = json.dumps({"pageToken": token}).encode()
        out = subprocess.run(
            ["curl", "-s", "--http2-prior-knowledge", "-X", "POST", "-H", "content-type: application/grpc+json",
             "-H", "te: trailers", "--data-binary", "@-", "-D", "-", "-o", "/dev/stderr",
             f"http://{server.address}/ridehailing.orders.v1.OrderService/ListOrders"],
            input=b"\x00" + len(body).to_bytes(4, "big") + body, capture_output=True, timeout=60)
        assert b"grpc-status: 0" in out.stdout, out.stdout
        size = int.from_bytes(out.stderr[1:5], "big")
        page = json.loads(out.stderr[5:5 + size])
        return {"orders": [o["id"] for o in page.get("orders", [])], "next_page_token": page.get("nextPageToken", ""),
                "bytes": size}

    pages = read_all(call)
    listed_ids = [i for p in pages for i in p["orders"]]
    assert len(listed_ids) == ORDERS and set(listed_ids) == ids
    assert all(p["orders"] and p["bytes"] <= MIB + 64 for p in pages), [(len(p["orders"]), p["bytes"]) for p in pages]


def test_buf_curl_reads_the_first_page(listed):
    """buf curl, also limited to 4 MiB by default, gets the default first page."""
    from test_tools import buf

    server, ids = listed
    out = subprocess.run(
        [buf(), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--data", "{}",
         f"http://{server.address}/ridehailing.orders.v1.OrderService/ListOrders"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    page = json.loads(out.stdout)
    assert page["orders"] and {o["id"] for o in page["orders"]} <= ids and page["nextPageToken"]
