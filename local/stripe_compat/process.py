"""Run localstripe-compat as a subprocess, for tests and the local stack.

`start_stripe()` returns a `StripeHandle`; point clients at `handle.url`
(`stripe.StripeClient(key, base_addresses={"api": handle.url})`) and call `handle.stop()`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
READY_MESSAGE = "localstripe-compat listening on"  # printed by server.serve once bound
ROOT = Path(__file__).resolve().parents[2]  # where `-m local.stripe_compat` resolves
# The rules import Stripe's currency facts from the layer (clinic_payments.domain.money).
LAYER = ROOT / "layers" / "shared"


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class StripeHandle:
    url: str
    port: int
    process: subprocess.Popen[str]
    _output: deque[str] = field(default_factory=lambda: deque(maxlen=500))
    _ready: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    def output(self) -> str:
        """The server's recent stdout and stderr (for error messages)."""
        return "".join(self._output)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)  # reads to the end of the output, then returns
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> StripeHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _drain(self) -> None:
        # Keeps reading so the server never blocks on a full pipe.
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._output.append(line)
            if line.startswith(READY_MESSAGE):
                self._ready.set()


def start_stripe(port: int | None = None, timeout: float = 20.0) -> StripeHandle:
    """Start `python -m local.stripe_compat` on 127.0.0.1 and wait until it accepts
    connections. Raises RuntimeError (with the server's output) if it exits or times out."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "local.stripe_compat", "--port", str(port)],
        cwd=ROOT,
        env=_with_layer(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    handle = StripeHandle(url=f"http://{HOST}:{port}", port=port, process=process)
    handle._reader = threading.Thread(target=handle._drain, name=f"localstripe-{port}", daemon=True)
    handle._reader.start()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            handle.stop()  # collects the last lines of output
            raise RuntimeError(
                f"localstripe-compat exited with {process.returncode}:\n{handle.output()}"
            )
        # The ready line proves it is our server on that port, not another listener.
        if handle._ready.wait(0.05) and _accepts_connections(port):
            return handle
    handle.stop()
    raise RuntimeError(
        f"localstripe-compat did not listen on {handle.url} within {timeout} s:\n{handle.output()}"
    )


def _with_layer(environ: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    paths = [str(LAYER), *filter(None, environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**environ, "PYTHONPATH": os.pathsep.join(paths)}


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False
