"""The local gateway's execution environments: per function, a pool of worker processes
(`local.lambda_runtime`), as Lambda keeps several warm containers of one function.

A pool starts a worker when a request finds none idle, up to its cap, and queues requests
beyond it; a worker runs one event at a time and stays warm for the next. Each worker is its own
process, so what one container keeps in memory (module state, caches, a logger's keys) no other
container sees, as on Lambda. A worker that times out, crashes or exits is discarded and a new
one starts on demand (a cold start), as Lambda replaces such an environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from local.template import ROOT

READY_TIMEOUT_SECONDS = 60.0  # importing a handler: boto3, stripe, Powertools (~2 s when idle)
STOP_GRACE_SECONDS = 3.0


class InvocationError(Exception):
    """The function failed: it raised, returned something that is not JSON, or its process
    died. API Gateway answers any of these with a 500."""


class InvocationTimeout(Exception):
    """No answer before the deadline; the worker was stopped."""


class PoolClosed(Exception):
    """The gateway is stopping."""


@dataclass(frozen=True)
class InvocationContext:
    function_name: str
    aws_request_id: str
    deadline_ms: int  # epoch milliseconds, as Lambda's Lambda-Runtime-Deadline-Ms
    memory_limit_in_mb: int = 512


class Worker:
    """One warm container: a `local.lambda_runtime` process serving one handler module."""

    def __init__(self, module: str, env: dict[str, str]) -> None:
        self.module = module
        self._process = subprocess.Popen(
            [sys.executable, "-m", "local.lambda_runtime", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._ready = False
        self._broken = False
        self._reader = threading.Thread(target=self._read, name=f"worker-{self.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        """Whether the container can take another event (its handler imported, its process up)."""
        return not self._broken and self._process.poll() is None

    def _read(self) -> None:
        """Forward the worker's log lines as they come; queue everything else for invoke()."""
        stdout = self._process.stdout
        assert stdout is not None
        for line in stdout:
            try:
                message = json.loads(line)
            except ValueError:
                message = {"log": "stderr", "text": line.decode("utf-8", "replace")}
            if "log" in message:
                stream = sys.stdout if message["log"] == "stdout" else sys.stderr
                stream.write(message["text"])
                stream.flush()
            else:
                self._messages.put(message)
        self._messages.put(None)

    def _next(self, deadline: float) -> dict[str, Any]:
        try:
            message = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            self.kill()  # as Lambda ends an environment whose function timed out
            raise InvocationTimeout from None
        if message is None:
            code = self._process.wait()
            raise InvocationError(f"Runtime exited with error: exit status {code}")
        return message

    def invoke(self, event: dict[str, Any], context: InvocationContext) -> Any:
        """The handler's result, or InvocationError / InvocationTimeout."""
        deadline = time.monotonic() + max(0.0, context.deadline_ms / 1000 - time.time())
        if not self._ready:
            # Lambda's init phase: the first event waits for the handler's import.
            message = self._next(time.monotonic() + READY_TIMEOUT_SECONDS)
            if "error" in message:
                self._broken = True
                raise InvocationError(message["error"].get("errorMessage", "init failed"))
            self._ready = True
        stdin = self._process.stdin
        assert stdin is not None
        request = {"event": event, "context": context.__dict__}
        try:
            stdin.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")
            stdin.flush()
        except OSError as exc:
            self._broken = True
            raise InvocationError(f"Runtime exited: {exc}") from None
        message = self._next(deadline)
        if "error" in message:
            raise InvocationError(message["error"].get("errorMessage", ""))
        return message.get("result")

    def kill(self) -> None:
        self._process.kill()
        self.stop()

    def stop(self) -> None:
        """End the process: its stdin closes (it exits), and it is killed if it lingers."""
        process = self._process
        stdin: IO[bytes] | None = process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._reader.join(timeout=STOP_GRACE_SECONDS)


class FunctionPool:
    """The warm workers of one function: at most `cap`, reused most recently used first."""

    def __init__(self, function: str, module: str, cap: int) -> None:
        if cap < 1:
            raise ValueError("a function needs at least one worker")
        self.function = function
        self.module = module
        self._cap = cap
        self._idle: list[Worker] = []
        self._busy: set[Worker] = set()
        self._starting = 0
        self._closed = False
        self._changed = threading.Condition()

    def _acquire(self) -> Worker:
        with self._changed:
            while True:
                if self._closed:
                    raise PoolClosed
                while self._idle and not self._idle[-1].alive:
                    # A container that died while idle is never handed an event (Lambda's
                    # router does not know dead environments either).
                    self._idle.pop().stop()
                if self._idle:
                    worker = self._idle.pop()
                    self._busy.add(worker)
                    return worker
                if len(self._busy) + self._starting < self._cap:
                    self._starting += 1
                    break
                self._changed.wait()
        # The environment at start: the template's variables as the local stack sets them.
        try:
            worker = Worker(self.module, dict(os.environ))
        finally:
            with self._changed:
                self._starting -= 1
                self._changed.notify_all()
        with self._changed:
            self._busy.add(worker)
            closed = self._closed
        if closed:
            self._discard(worker)
            raise PoolClosed
        return worker

    def _release(self, worker: Worker) -> None:
        with self._changed:
            self._busy.discard(worker)
            keep = not self._closed
            if keep:
                self._idle.append(worker)
            self._changed.notify_all()
        if not keep:
            worker.stop()

    def _discard(self, worker: Worker) -> None:
        with self._changed:
            self._busy.discard(worker)
            self._changed.notify_all()
        worker.stop()

    def invoke(self, event: dict[str, Any], context: InvocationContext) -> Any:
        worker = self._acquire()
        try:
            result = worker.invoke(event, context)
        except InvocationError:
            # A handled exception leaves the container warm; a dead process does not.
            if worker.alive:
                self._release(worker)
            else:
                self._discard(worker)
            raise
        except BaseException:
            self._discard(worker)
            raise
        self._release(worker)
        return result

    def kill_all(self) -> int:
        """Kill every container of this function, busy ones mid-event (a fault for tests and
        the soak: a Lambda that dies). Each is dead when this returns. How many were killed."""
        with self._changed:
            workers = [*self._idle, *self._busy]
        for worker in workers:
            worker.kill()
        return len(workers)

    def pids(self) -> list[int]:
        with self._changed:
            return sorted(w.pid for w in (*self._idle, *self._busy))

    def close(self) -> None:
        """Stop every worker, busy ones included (their requests fail)."""
        with self._changed:
            self._closed = True
            workers = [*self._idle, *self._busy]
            self._idle.clear()
            self._changed.notify_all()
        for worker in workers:
            worker.stop()
