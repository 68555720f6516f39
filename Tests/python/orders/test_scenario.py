"""The seed's scenario and the status contract, through a generated grpcio client."""
import concurrent.futures
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from conftest import DRIVER, RIDER, place, route, update


def details(err: grpc.RpcError):
    """The google.rpc.Status details of an error (from grpc-status-details-bin)."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            assert status.code == err.code().value[0]
            assert status.message == err.details()
            return status.details
    return []


def error_info(err):
    for any_ in details(err):
        info = error_details_pb2.ErrorInfo()
        if any_.Unpack(info):
            return info
    return None


def bad_request_fields(err):
    fields = []
    for any_ in details(err):
        br = error_details_pb2.BadRequest()
        if any_.Unpack(br):
            fields += [v.field for v in br.field_violations]
    return fields


def test_seed_scenario(stub, pb):
    S = pb.m.OrderStatus
    placed = place(stub, pb)
    order_id = placed.order_id
    assert placed.order.status == S.ORDER_STATUS_PLACED and placed.order.version == 1
    assert placed.position

    got = stub.GetOrder(pb.m.GetOrderRequest(order_id=order_id), timeout=5)
    assert got.rider_id == RIDER and got.price == "123.45" and got.version == 1
    assert [w.lon for w in got.route] == [30.467197278948536, 30.485170724431292]
    assert got.HasField("placed_date")

    accepted = update(stub, pb, order_id, S.ORDER_STATUS_ACCEPTED, 1, driver_id=DRIVER)
    assert accepted.order.status == S.ORDER_STATUS_ACCEPTED and accepted.order.version == 2
    assert accepted.order.driver_id == DRIVER

    with pytest.raises(grpc.RpcError) as stale:
        update(stub, pb, order_id, S.ORDER_STATUS_CANCELLED, 1)
    assert stale.value.code() == grpc.StatusCode.ABORTED
    info = error_info(stale.value)
    assert info is not None and info.metadata["expected_version"] == "1" and info.metadata["actual_version"] == "2"

    completed = update(stub, pb, order_id, S.ORDER_STATUS_COMPLETED, 2)
    assert completed.order.status == S.ORDER_STATUS_COMPLETED and completed.order.version == 3

    with pytest.raises(grpc.RpcError) as refused:
        update(stub, pb, order_id, S.ORDER_STATUS_CANCELLED, 3)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "COMPLETED" in refused.value.details()

    history = stub.GetOrderEvents(pb.m.GetOrderEventsRequest(order_id=order_id), timeout=5).events
    assert [e.event_type for e in history] == [
        "OrderPlacedEvent", "OrderAcceptedEvent", "ErrorEvent", "OrderCompletedEvent", "ErrorEvent"]
    assert [e.version for e in history if e.event_type != "ErrorEvent"] == [1, 2, 3]
    assert history[2].error_event.reason == "VERSION_MISMATCH"
    assert history[4].error_event.reason == "TRANSITION_NOT_ALLOWED"
    final = stub.GetOrder(pb.m.GetOrderRequest(order_id=order_id, min_version=3), timeout=5)
    assert final.version == 3 and len(final.errors) == 2


def test_order_errors_say_why_and_at_which_version(stub, pb):
    """Order.errors carries each refusal's reason and the version the order was at, as its
    ErrorEvent does (found by a client team's review: a client reading the order could not
    tell a stale version from a transition not allowed)."""
    S = pb.m.OrderStatus
    order_id = place(stub, pb).order_id
    with pytest.raises(grpc.RpcError) as refused:
        update(stub, pb, order_id, S.ORDER_STATUS_COMPLETED, 1)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    accepted = update(stub, pb, order_id, S.ORDER_STATUS_ACCEPTED, 1, driver_id=DRIVER)
    with pytest.raises(grpc.RpcError) as stale:
        update(stub, pb, order_id, S.ORDER_STATUS_CANCELLED, 1)
    assert stale.value.code() == grpc.StatusCode.ABORTED

    def summary(order):
        return [(e.command_type, e.reason, e.expected_version, e.actual_version) for e in order.errors]

    first = ("CompleteOrder", "TRANSITION_NOT_ALLOWED", 1, 1)
    both = [first, ("CancelOrder", "VERSION_MISMATCH", 1, 2)]
    assert summary(accepted.order) == [first]  # the UpdateOrder response's snapshot
    got = stub.GetOrder(pb.m.GetOrderRequest(order_id=order_id, min_version=2), timeout=5)
    assert summary(got) == both
    listed = stub.ListOrders(pb.m.ListOrdersRequest(page_size=1000), timeout=5).orders
    assert [summary(o) for o in listed if o.id == order_id] == [both]


def test_concurrent_updates_one_winner_and_retry_applies_once(stub, pb):
    S = pb.m.OrderStatus
    order_id = place(stub, pb).order_id
    requests = [str(uuid.uuid4()) for _ in range(20)]
    drivers = {r: str(uuid.uuid4()) for r in requests}  # a retry repeats its request's fields

    def attempt(request_id):
        try:
            update(stub, pb, order_id, S.ORDER_STATUS_ACCEPTED, 1, driver_id=drivers[request_id], request_id=request_id)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(attempt, requests))
    assert results.count("OK") == 1, results
    assert results.count("ABORTED") == 19, results

    winner = requests[results.index("OK")]
    again = update(stub, pb, order_id, S.ORDER_STATUS_ACCEPTED, 1, driver_id=drivers[winner], request_id=winner)
    assert again.order.version == 2
    loser = requests[results.index("ABORTED")]
    with pytest.raises(grpc.RpcError) as e:  # a retried loser gets its first outcome back, too
        update(stub, pb, order_id, S.ORDER_STATUS_ACCEPTED, 1, driver_id=drivers[loser], request_id=loser)
    assert e.value.code() == grpc.StatusCode.ABORTED
    history = stub.GetOrderEvents(pb.m.GetOrderEventsRequest(order_id=order_id), timeout=5).events
    assert [e.event_type for e in history].count("OrderAcceptedEvent") == 1
    assert len(history) == 21  # placed, one accepted, 19 errors: the retries added nothing


def test_place_retry_returns_the_first_order(stub, pb):
    rid = str(uuid.uuid4())
    first = place(stub, pb, request_id=rid)
    second = place(stub, pb, request_id=rid)
    assert first.order_id == second.order_id and second.order == first.order
    listed = stub.ListOrders(pb.m.ListOrdersRequest(page_size=1000), timeout=5).orders
    assert [o.id for o in listed].count(first.order_id) == 1


INVALID = [
    ("rider_id", dict(rider_id="not-a-uuid")),
    ("price", dict(price="")),
    ("price", dict(price="-1")),
    ("price", dict(price="0")),
    ("price", dict(price="1.234")),
    ("price", dict(price="1e5")),
    ("route", dict(route="one")),
    ("route[0].address", dict(route="blank-address")),
    ("route[1].lat", dict(route="lat")),
    ("route[0].lon", dict(route="lon")),
]


@pytest.mark.parametrize("field,change", INVALID, ids=[f"{f}-{i}" for i, (f, _) in enumerate(INVALID)])
def test_place_validation_names_the_field(stub, pb, field, change):
    r = route(pb)
    kind = change.get("route")
    if kind == "one":
        change["route"] = r[:1]
    elif kind == "blank-address":
        r[0].address = "   "
        change["route"] = r
    elif kind == "lat":
        r[1].lat = 90.5
        change["route"] = r
    elif kind == "lon":
        r[0].lon = -180.01
        change["route"] = r
    before = stub.ListOrders(pb.m.ListOrdersRequest(page_size=1000), timeout=5).orders
    with pytest.raises(grpc.RpcError) as e:
        place(stub, pb, **change)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in e.value.details() or field.split("[")[0] in e.value.details()
    assert bad_request_fields(e.value) == [field]
    assert stub.ListOrders(pb.m.ListOrdersRequest(page_size=1000), timeout=5).orders == before


def test_update_validation(stub, pb):
    S = pb.m.OrderStatus
    order_id = place(stub, pb).order_id
    cases = [
        ("driver_id", dict(status=S.ORDER_STATUS_ACCEPTED, version=1, driver_id="")),
        ("driver_id", dict(status=S.ORDER_STATUS_ACCEPTED, version=1, driver_id="bob")),
        ("status", dict(status=S.ORDER_STATUS_PLACED, version=1)),
        ("status", dict(status=S.ORDER_STATUS_UNSPECIFIED, version=1)),
        ("version", dict(status=S.ORDER_STATUS_CANCELLED, version=0)),
        ("order_id", dict(status=S.ORDER_STATUS_CANCELLED, version=1, order_id="nope")),
    ]
    for field, kw in cases:
        with pytest.raises(grpc.RpcError) as e:
            update(stub, pb, kw.pop("order_id", order_id), **kw)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, e.value.details())
        assert bad_request_fields(e.value) == [field]
    order = stub.GetOrder(pb.m.GetOrderRequest(order_id=order_id), timeout=5)
    assert order.version == 1 and not order.errors


def test_unknown_order_not_found_and_not_created(stub, pb):
    S = pb.m.OrderStatus
    ghost = str(uuid.uuid4())
    for call in (lambda: stub.GetOrder(pb.m.GetOrderRequest(order_id=ghost), timeout=5),
                 lambda: stub.GetOrderEvents(pb.m.GetOrderEventsRequest(order_id=ghost), timeout=5),
                 lambda: update(stub, pb, ghost, S.ORDER_STATUS_ACCEPTED, 0 + 1, driver_id=DRIVER)):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    listed = stub.ListOrders(pb.m.ListOrdersRequest(page_size=1000), timeout=5).orders
    assert ghost not in [o.id for o in listed]


def test_not_found_on_reads_carries_error_info(stub, pb):
    ghost = str(uuid.uuid4())
    for call in (lambda: stub.GetOrder(pb.m.GetOrderRequest(order_id=ghost), timeout=5),
                 lambda: stub.GetOrderEvents(pb.m.GetOrderEventsRequest(order_id=ghost), timeout=5)):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        info = error_info(e.value)
        assert info is not None and info.reason == "NOT_FOUND" and info.metadata["order_id"] == ghost


def test_a_request_id_reused_for_another_command_is_refused(stub, pb):
    """A request_id answers the one command it was first used for; another command with it
    is refused (INVALID_ARGUMENT naming request_id), not answered with the first one's
    outcome, which is about another order or another kind of command."""
    S = pb.m.OrderStatus
    a, b = place(stub, pb).order_id, place(stub, pb).order_id
    rid = str(uuid.uuid4())
    assert update(stub, pb, a, S.ORDER_STATUS_CANCELLED, 1, request_id=rid).order.id == a
    refused = [
        lambda: update(stub, pb, b, S.ORDER_STATUS_CANCELLED, 1, request_id=rid),  # another order
        lambda: update(stub, pb, a, S.ORDER_STATUS_ACCEPTED, 1, driver_id=DRIVER, request_id=rid),  # another command
        lambda: update(stub, pb, a, S.ORDER_STATUS_CANCELLED, 2, request_id=rid),  # another version
        lambda: place(stub, pb, request_id=rid),  # another RPC
    ]
    for call in refused:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert bad_request_fields(e.value) == ["request_id"] and a in e.value.details()
    # The retry itself still returns the first outcome; b was left alone.
    assert update(stub, pb, a, S.ORDER_STATUS_CANCELLED, 1, request_id=rid).order.version == 2
    assert stub.GetOrder(pb.m.GetOrderRequest(order_id=b), timeout=5).status == S.ORDER_STATUS_PLACED

    # A rejection is an outcome too: reusing its id on an order where the command would
    # apply is refused, not answered ABORTED with the other order's versions.
    rejected = str(uuid.uuid4())
    with pytest.raises(grpc.RpcError) as e:
        update(stub, pb, a, S.ORDER_STATUS_CANCELLED, 1, request_id=rejected)  # a is at version 2
    assert e.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.RpcError) as e:
        update(stub, pb, b, S.ORDER_STATUS_CANCELLED, 1, request_id=rejected)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_request_fields(e.value) == ["request_id"]

    # NOT_FOUND records nothing, so its id may go on to another command; the first call
    # retried then is refused rather than answered with that command's order.
    ghost, rid = str(uuid.uuid4()), str(uuid.uuid4())
    with pytest.raises(grpc.RpcError) as e:
        update(stub, pb, ghost, S.ORDER_STATUS_CANCELLED, 1, request_id=rid)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert update(stub, pb, b, S.ORDER_STATUS_CANCELLED, 1, request_id=rid).order.id == b
    with pytest.raises(grpc.RpcError) as e:
        update(stub, pb, ghost, S.ORDER_STATUS_CANCELLED, 1, request_id=rid)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_request_fields(e.value) == ["request_id"]


def test_a_request_id_reused_with_other_fields_is_refused(stub, pb):
    """Two clients that happen on one request_id (or a retry that changed its request) are
    not told that their order was placed, or accepted, when another one was: the fields are
    compared with the first command's, and a difference is refused naming them."""
    S = pb.m.OrderStatus
    rid = str(uuid.uuid4())
    first = place(stub, pb, request_id=rid, price="10.00")
    assert place(stub, pb, request_id=rid, price="10.00").order_id == first.order_id  # the retry
    other_rider = "5d3c8b1e-7a41-4c9f-9f3e-0d2b6a7c8e90"
    for kw, fields in (({"price": "99.00"}, "price"), ({"rider_id": other_rider}, "rider_id"),
                       ({"price": "99.00", "route": route(pb)[::-1]}, "price, route")):
        with pytest.raises(grpc.RpcError) as e:
            place(stub, pb, request_id=rid, **{"price": "10.00", **kw})
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert bad_request_fields(e.value) == ["request_id"]
        assert f"with another {fields};" in e.value.details()
    accept = str(uuid.uuid4())
    assert update(stub, pb, first.order_id, S.ORDER_STATUS_ACCEPTED, 1, driver_id=DRIVER, request_id=accept).order.version == 2
    with pytest.raises(grpc.RpcError) as e:
        update(stub, pb, first.order_id, S.ORDER_STATUS_ACCEPTED, 1, driver_id=other_rider, request_id=accept)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "with another driver_id;" in e.value.details()
    order = stub.GetOrder(pb.m.GetOrderRequest(order_id=first.order_id), timeout=5)
    assert order.price == "10.00" and order.driver_id == DRIVER


def test_uuids_are_case_insensitive(stub, pb):
    """UUIDs in capitals (Swift's UUID().uuidString) name the same order, rider and driver."""
    S = pb.m.OrderStatus
    placed = place(stub, pb, rider_id=RIDER.upper())
    assert placed.order.rider_id == RIDER
    upper = placed.order_id.upper()
    assert upper != placed.order_id
    assert stub.GetOrder(pb.m.GetOrderRequest(order_id=upper), timeout=5).id == placed.order_id
    assert [e.version for e in stub.GetOrderEvents(pb.m.GetOrderEventsRequest(order_id=upper), timeout=5).events] == [1]
    accepted = update(stub, pb, upper, S.ORDER_STATUS_ACCEPTED, 1, driver_id=DRIVER.upper())
    assert accepted.order.id == placed.order_id and accepted.order.driver_id == DRIVER and accepted.order.version == 2
    stream = stub.StreamEvents(pb.m.StreamEventsRequest(from_start=True, order_id=upper), timeout=10)
    got = []
    for res in stream:
        if res.WhichOneof("kind") == "caught_up":
            break
        if res.WhichOneof("kind") == "event":
            got.append(res.event.version)
    stream.cancel()
    assert got == [1, 2]


def test_get_order_min_version_waits_within_deadline(stub, pb):
    order_id = place(stub, pb).order_id
    with pytest.raises(grpc.RpcError) as e:
        stub.GetOrder(pb.m.GetOrderRequest(order_id=order_id, min_version=2), timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_list_orders_pages_and_filters(stub, pb):
    S = pb.m.OrderStatus
    ids = [place(stub, pb).order_id for _ in range(7)]
    update(stub, pb, ids[0], S.ORDER_STATUS_CANCELLED, 1)
    seen, token = [], ""
    while True:
        page = stub.ListOrders(pb.m.ListOrdersRequest(page_size=3, page_token=token), timeout=5)
        assert len(page.orders) <= 3
        seen += [o.id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    cancelled = stub.ListOrders(pb.m.ListOrdersRequest(status=S.ORDER_STATUS_CANCELLED), timeout=5).orders
    assert [o.id for o in cancelled] == [ids[0]]
    with pytest.raises(grpc.RpcError) as e:
        stub.ListOrders(pb.m.ListOrdersRequest(page_token="garbage"), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
