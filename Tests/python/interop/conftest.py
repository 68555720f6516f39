"""Shared fixtures: Python stubs generated from /usr/share/grpc-proto, and the Swift
interop server started on a free port and killed by pid afterwards."""

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

REPO = Path(__file__).resolve().parents[3]
PROTO_ROOT = Path("/usr/share/grpc-proto")
SERVER_BIN = Path(os.environ.get("INTEROP_SERVER_BIN", REPO / ".build/debug/grpc-interop-server"))


@pytest.fixture(scope="session")
def stubs():
    """Generates grpc.testing and grpc.reflection.v1 stubs with grpcio-tools into a temp dir.

    Their package is `grpc.…`, which the installed grpc package owns, so the generated
    `grpc/` folder is appended to `grpc.__path__` to make `grpc.testing` importable."""
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="interop-stubs-"))
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = ["grpc/testing/test.proto", "grpc/testing/messages.proto", "grpc/testing/empty.proto"]
    rc = protoc.main(
        ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    )
    assert rc == 0, "grpc_tools.protoc failed"
    # grpcio aliases the module grpc.reflection to grpc_reflection (which has no v1 client),
    # so reflection v1 is generated from a copy under another folder: the proto package,
    # and so the service name, stay grpc.reflection.v1.
    stage = out / "stage" / "interop_reflection_v1"
    stage.mkdir(parents=True)
    stage.joinpath("reflection.proto").write_bytes((PROTO_ROOT / "grpc/reflection/v1/reflection.proto").read_bytes())
    rc = protoc.main(
        ["protoc", f"-I{out / 'stage'}", f"--python_out={out}", f"--grpc_python_out={out}", "interop_reflection_v1/reflection.proto"]
    )
    assert rc == 0, "grpc_tools.protoc failed for reflection v1"
    (out / "grpc/testing/__init__.py").touch()
    (out / "interop_reflection_v1/__init__.py").touch()
    grpc.__path__.append(str(out / "grpc"))
    sys.path.insert(0, str(out))
    from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc  # noqa: E402
    from interop_reflection_v1 import reflection_pb2, reflection_pb2_grpc  # noqa: E402

    class Stubs:
        pass

    s = Stubs()
    s.empty = empty_pb2
    s.messages = messages_pb2
    s.test = test_pb2_grpc
    s.reflection_v1 = reflection_pb2
    s.reflection_v1_grpc = reflection_pb2_grpc
    return s


class RunningServer:
    def __init__(self, proc, port):
        self.proc = proc
        self.port = port
        self.address = f"127.0.0.1:{port}"

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def alive(self):
        return self.proc.poll() is None


def start_server(*args):
    if not SERVER_BIN.exists():
        pytest.fail(f"{SERVER_BIN} not built (swift build --product grpc-interop-server)")
    proc = subprocess.Popen(
        [str(SERVER_BIN), "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    text = line.decode().strip()
    if not text.startswith("listening on "):
        proc.kill()
        pytest.fail(f"server did not start: {text!r} {proc.stderr.read().decode() if proc.poll() is not None else ''}")
    return RunningServer(proc, int(text.split()[-1]))


def stop_server(server):
    # By pid, never by name: SIGTERM (graceful), then SIGKILL.
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


@pytest.fixture(scope="module")
def server():
    s = start_server()
    yield s
    stop_server(s)


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture
def stub(stubs, channel):
    return stubs.test.TestServiceStub(channel)
