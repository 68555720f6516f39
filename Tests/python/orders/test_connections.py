"""What connections held open cost the server when they use up its file descriptors."""
import os
import resource
import socket
import subprocess
import time

import grpc

from conftest import binary, place

LIMIT = 128


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(condition, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_with_no_descriptor_left_the_server_pauses_accepting_instead_of_spinning(data_dir, pb):
    """Connections held open up to the process's descriptor limit, more waiting in the
    backlog: accept fails (EMFILE) while the listening socket stays readable, and the event
    loop retried at once, at 100 % of a core, for as long as the connections stayed. Now it
    says so in its log and tries again a second later; once connections close, it serves."""
    log_path = os.path.join(data_dir, "server.log")
    proc = subprocess.Popen(
        [binary("orders-server", "ORDERS_SERVER_BIN"), "--listen", "127.0.0.1:0", "--data-dir", data_dir,
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=open(log_path, "ab"),
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT)))
    held = []
    try:
        line = proc.stdout.readline().decode()
        assert "listening on port" in line, line
        port = int(line.rsplit(" ", 1)[1])
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(LIMIT + 20)]
        assert wait_until(lambda: len(os.listdir(f"/proc/{proc.pid}/fd")) >= LIMIT)
        assert wait_until(lambda: "Cannot accept connections" in open(log_path, errors="replace").read()), \
            "no accept failure logged"
        # Two seconds of a full descriptor table: spinning took about two seconds of CPU.
        before = cpu_seconds(proc.pid)
        time.sleep(2)
        used = cpu_seconds(proc.pid) - before
        assert used < 0.5, f"the server used {used:.2f} s of CPU in 2 s with nothing to do"

        for s in held:
            s.close()
        held = []
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert place(pb.g.OrderServiceStub(channel), pb).order_id
    finally:
        for s in held:
            s.close()
        proc.kill()
        proc.wait()
        proc.stdout.close()
