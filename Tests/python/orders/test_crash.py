"""kill -9 of the server under concurrent writes, then a restart on the same data:
every acknowledged outcome is there, nothing is applied twice, histories stay gapless."""
import random
import signal
import threading
import time
import uuid

import grpc

from conftest import DRIVER, Server, place, update


def test_kill9_under_load_loses_nothing_acknowledged(data_dir, pb):
    S = pb.m.OrderStatus
    acked_places = {}    # request_id -> order_id
    acked_accepts = set()  # order ids whose accept was acknowledged
    attempted = []       # every place request_id sent
    lock = threading.Lock()
    rng = random.Random(7)

    for cycle in range(3):
        server = Server(data_dir).start()
        stop = threading.Event()

        def writer():
            with grpc.insecure_channel(server.address) as ch:
                stub = pb.g.OrderServiceStub(ch)
                while not stop.is_set():
                    rid = str(uuid.uuid4())
                    with lock:
                        attempted.append(rid)
                    try:
                        order_id = place(stub, pb, request_id=rid).order_id
                        with lock:
                            acked_places[rid] = order_id
                        update(stub, pb, order_id, S.ORDER_STATUS_ACCEPTED, 1, driver_id=DRIVER,
                               request_id="accept-" + rid)
                        with lock:
                            acked_accepts.add(order_id)
                    except grpc.RpcError:
                        pass

        threads = [threading.Thread(target=writer, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.5 + rng.random() * 1.5)
        server.kill(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(timeout=20)

    server = Server(data_dir).start()
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = pb.g.OrderServiceStub(ch)
            assert acked_places, "the load produced no acknowledged commands"
            for rid, order_id in acked_places.items():
                order = stub.GetOrder(pb.m.GetOrderRequest(order_id=order_id), timeout=10)
                assert order.version >= (2 if order_id in acked_accepts else 1)
            # Retrying every request ever sent yields exactly one order per request_id.
            for rid in attempted:
                again = place(stub, pb, request_id=rid)
                if rid in acked_places:
                    assert again.order_id == acked_places[rid]
            listed, token = [], ""
            while True:
                page = stub.ListOrders(pb.m.ListOrdersRequest(page_size=1000, page_token=token), timeout=10)
                listed += [o.id for o in page.orders]
                token = page.next_page_token
                if not token:
                    break
            assert len(listed) == len(set(listed)) == len(set(attempted))
            for order_id in listed:
                events = stub.GetOrderEvents(pb.m.GetOrderEventsRequest(order_id=order_id), timeout=10).events
                versions = [e.version for e in events if e.event_type != "ErrorEvent"]
                assert versions == list(range(1, len(versions) + 1)), (order_id, versions)
                assert len({e.command_id for e in events}) == len(events)
    finally:
        server.kill(signal.SIGTERM)
