"""One Lambda execution environment on this machine: a process that imports one function's
handler once and then runs one event at a time, as long as it is kept warm.

The local gateway starts it as `python -m local.lambda_runtime <handler module>` with the
environment the function sees. Events arrive on stdin and answers leave on stdout, one JSON
message a line:

- gateway -> worker: `{"event": {...}, "context": {"function_name", "aws_request_id",
  "deadline_ms", "memory_limit_in_mb"}}`;
- worker -> gateway: `{"ready": true}` once the handler is imported (or `{"error": ...}` if it
  cannot be), then per event any number of `{"log": "stdout" | "stderr", "text": ...}` (what
  the handler printed or logged: the gateway writes it to its own output, as Lambda writes a
  function's output to its log stream) and one `{"result": ...}` or `{"error": {"errorType",
  "errorMessage", "stackTrace"}}`.

Logs travel on the same pipe as the answer, so a request's log lines are written before its
response goes out. The process ends when stdin closes or its parent goes away.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from local.template import ROOT

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
LAMBDA_TIMEOUT_SECONDS = 29.0  # template.yaml's Globals: Function: Timeout


@dataclass
class LambdaContext:
    """The parts of the Lambda context object handlers and Powertools read."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    deadline: float = field(default_factory=lambda: time.monotonic() + LAMBDA_TIMEOUT_SECONDS)
    identity: Any = None
    client_context: Any = None

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        return f"{day}/[{self.function_version}]{self.aws_request_id.replace('-', '')}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class _Channel:
    """The pipe to the gateway; several threads may write (a handler's own threads log too)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        self.send_json(json.dumps(message, separators=(",", ":")))

    def send_json(self, text: str) -> None:
        line = text.encode() + b"\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()


class _LogStream(io.TextIOBase):
    """sys.stdout / sys.stderr of the worker: each write goes to the gateway as a log message."""

    def __init__(self, channel: _Channel, name: str) -> None:
        self._channel = channel
        self._name = name

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self._channel.send({"log": self._name, "text": text})
        return len(text)


def _error(exc: BaseException) -> dict[str, Any]:
    """An error as the Lambda runtime reports it, its traceback written to the log as well."""
    stack = traceback.format_exception(exc)
    sys.stderr.write("".join(stack))
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": stack,
    }


def _exit_with_parent(parent: int) -> None:
    """A worker whose gateway died (even killed mid-request) does not outlive it."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def main(argv: list[str]) -> int:
    module_name = argv[0]
    # The gateway stops its workers itself; Ctrl-C in `make run` reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    # stdout is the pipe to the gateway: keep it for messages only, and send anything written to
    # file descriptor 1 below Python (a C library, a child process) to stderr instead.
    channel = _Channel(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)
    sys.stdout = _LogStream(channel, "stdout")
    sys.stderr = _LogStream(channel, "stderr")
    stdin = sys.stdin.buffer
    # As under Lambda: the layer (/opt/python) and the function's code on sys.path.
    for path in (str(ROOT / "layers" / "shared"), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)

    try:
        handler = importlib.import_module(module_name).lambda_handler
    except Exception as exc:  # noqa: BLE001 - Runtime.ImportModuleError: every invocation fails
        channel.send({"error": _error(exc)})
        return 1
    channel.send({"ready": True})

    for line in stdin:
        request = json.loads(line)
        info = request["context"]
        remaining = info["deadline_ms"] / 1000 - time.time()
        context = LambdaContext(
            function_name=info["function_name"],
            aws_request_id=info["aws_request_id"],
            memory_limit_in_mb=info["memory_limit_in_mb"],
            deadline=time.monotonic() + remaining,
        )
        try:
            # Lambda serialises the answer: one that is not JSON is the function's error too.
            answer = json.dumps({"result": handler(request["event"], context)})
        except Exception as exc:  # noqa: BLE001 - any failure is the function's error, not ours
            answer = json.dumps({"error": _error(exc)})
        channel.send_json(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
