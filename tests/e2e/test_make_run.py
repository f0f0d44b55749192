"""`make run` end to end: the stack starts, serves the seeded demo clinic, and stops cleanly."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import IO

import pytest

from local.aws import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60
STOP_TIMEOUT = 15


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def _can_listen(port: int) -> bool:
    """Whether a server could listen on the port again (with SO_REUSEADDR, as servers do)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
    return True


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class RunningStack:
    def __init__(self, proc: subprocess.Popen[str], stderr: IO[str], ports: dict[str, int]):
        self.proc = proc
        self.stderr = stderr
        self.ports = ports
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        assert proc.stdout is not None
        threading.Thread(target=_pump, args=(proc.stdout, self.lines), daemon=True).start()

    def diagnostics(self) -> str:
        self.stderr.seek(0)
        return "stdout:\n" + "\n".join(self.output) + "\nstderr:\n" + self.stderr.read()[-8000:]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"local.run exited early ({self.proc.wait()}):\n{self.diagnostics()}")
            self.output.append(line)
            if line.startswith("ready"):
                return
        pytest.fail(f"no 'ready' line within {timeout} s:\n{self.diagnostics()}")

    def value(self, prefix: str) -> str:
        for line in self.output:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        pytest.fail(f"no line starting with {prefix!r}:\n{self.diagnostics()}")


@pytest.fixture
def stack() -> Iterator[RunningStack]:
    api, stripe, moto = _free_ports(3)
    ports = {"API_PORT": api, "STRIPE_PORT": stripe, "MOTO_PORT": moto}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile("w+", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "local.run"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # its own process group: the cleanup below reaches it all
        )
        try:
            yield RunningStack(proc, stderr, ports)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


def test_make_run_serves_the_demo_clinic_and_stops_on_ctrl_c(stack: RunningStack) -> None:
    stack.wait_ready(READY_TIMEOUT)
    api = f"http://127.0.0.1:{stack.ports['API_PORT']}"
    assert any(api in line for line in stack.output), stack.diagnostics()

    status, body = _get(f"{api}/v1/health")
    assert status == 200, body

    patient_token = stack.value("PATIENT_TOKEN=")
    status, body = _get(f"{api}/v1/clinics/demo/patients/pat_1/invoices", patient_token)
    assert status == 200, body

    stack.proc.send_signal(signal.SIGINT)
    try:
        code = stack.proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"local.run still running {STOP_TIMEOUT} s after SIGINT:\n{stack.diagnostics()}"
        )
    assert code == 0, stack.diagnostics()
    for var, port in stack.ports.items():
        assert _can_listen(port), f"{var} port {port} still taken after exit"
    assert _group_gone(stack.proc.pid, 5), "a process local.run started outlived it"


def _group_gone(pgid: int, timeout: float) -> bool:
    """Whether no process is left in the process group (the Stripe fake is stopped too)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
