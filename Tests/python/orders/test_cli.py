"""The seed's scenario through the `orders` CLI against the real server."""
import json
import signal
import subprocess

from conftest import DRIVER, RIDER, binary

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
