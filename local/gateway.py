"""What API Gateway HTTP API does in front of the functions, on 127.0.0.1.

Route matching from template.yaml, the JWT authorizer (with its quirks: every claim value a
string, arrays as "[a b]"), the payload format 2.0 event, and the v2 response mapped to HTTP.
Each function runs as Lambda runs it: in warm containers, here worker processes
(`local.workers`), several of one function at once when requests overlap (up to
`max_workers_per_function`, then queued), each container one event at a time and isolated from
the others. A function that raises, dies or outlives its timeout is API Gateway's 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from local.lambda_runtime import ACCOUNT_ID, LAMBDA_TIMEOUT_SECONDS, LambdaContext
from local.template import Route
from local.tokens import LOCAL_AUDIENCE, LOCAL_ISSUER
from local.workers import (
    FunctionPool,
    InvocationContext,
    InvocationError,
    InvocationTimeout,
    PoolClosed,
)

__all__ = ["LambdaContext", "LocalGateway", "stringify_claim", "to_http_response"]

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
# An HTTP API gives up on its integration after 30 s (503); a function timing out before that is
# a function error (500).
INTEGRATION_TIMEOUT_SECONDS = 30.0
MAX_WORKERS_PER_FUNCTION = 4
_TEXT_TYPES = {
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-yaml",
    "application/yaml",
}

PublicKey = rsa.RSAPublicKey | str | bytes


@dataclass(frozen=True)
class _CompiledRoute:
    route: Route
    pattern: re.Pattern[str]
    specificity: tuple[int, int, int]  # lower wins: greedy params, params, ANY method

    @property
    def route_key(self) -> str:
        return f"{self.route.method} {self.route.path}"


def _compile(route: Route) -> _CompiledRoute:
    parts: list[str] = []
    params = greedy = 0
    for segment in route.path.strip("/").split("/"):
        m = re.fullmatch(r"\{([A-Za-z0-9_.-]+)(\+?)\}", segment)
        if m is None:
            parts.append(re.escape(segment))
        elif m.group(2):
            greedy += 1
            parts.append(f"(?P<{_group(m.group(1))}>.+)")
        else:
            params += 1
            parts.append(f"(?P<{_group(m.group(1))}>[^/]+)")
    pattern = re.compile("/" + "/".join(parts))
    return _CompiledRoute(route, pattern, (greedy, params, int(route.method == "ANY")))


def _group(name: str) -> str:
    return "p_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _param_names(path: str) -> list[str]:
    names: list[str] = re.findall(r"\{([^}+]+)\+?\}", path)
    return names


def stringify_claim(value: Any) -> str:
    """A claim value as API Gateway's JWT authorizer hands it to the integration."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + " ".join(stringify_claim(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return True
    mime = content_type.split(";", 1)[0].strip().lower()
    return (
        mime.startswith("text/")
        or mime in _TEXT_TYPES
        or mime.endswith("+json")
        or mime.endswith("+xml")
    )


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _message(status: int, message: str, headers: dict[str, str] | None = None) -> _Response:
    hdrs = [("content-type", "application/json"), *(headers or {}).items()]
    return _Response(status, hdrs, json.dumps({"message": message}).encode())


class LocalGateway:
    """An HTTP API stand-in serving `routes` on 127.0.0.1 (port 0: any free port)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        routes: Sequence[Route] | None = None,
        issuer: str = LOCAL_ISSUER,
        audience: str | Sequence[str] = LOCAL_AUDIENCE,
        public_key: PublicKey | None = None,
        timeout_seconds: float = LAMBDA_TIMEOUT_SECONDS,
        max_workers_per_function: int = MAX_WORKERS_PER_FUNCTION,
    ) -> None:
        if host != "127.0.0.1":
            raise ValueError("the local gateway only binds 127.0.0.1")
        if routes is None:
            from local.template import routes as template_routes

            routes = template_routes()
        if public_key is None:
            from local.tokens import public_key as local_public_key

            public_key = local_public_key()
        self._host = host
        self._port = port
        self._routes = [_compile(r) for r in routes]
        self._issuer = issuer
        self._audience = [audience] if isinstance(audience, str) else list(audience)
        self._public_key = public_key
        self._timeout = timeout_seconds
        self._max_workers = max_workers_per_function
        self._pools: dict[str, FunctionPool] = {}
        self._pools_lock = threading.Lock()
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------------

    def start(self) -> LocalGateway:
        if self._server is not None:
            raise RuntimeError("already started")
        server = ThreadingHTTPServer((self._host, self._port), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._stopping = False
        self._thread = threading.Thread(
            target=server.serve_forever, name="local-gateway", kwargs={"poll_interval": 0.2}
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._pools_lock:
            # no container starts after this, even for a request still being read
            self._stopping = True
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
        if thread is not None:
            thread.join(timeout=10)
        self._server = self._thread = None

    def worker_pids(self, function: str) -> list[int]:
        """The processes of a function's warm containers (for tests of the isolation)."""
        with self._pools_lock:
            pool = self._pools.get(function)
        return pool.pids() if pool is not None else []

    def kill_workers(self, function: str) -> int:
        """Kill a function's warm containers, mid-request if busy (a Lambda that dies)."""
        with self._pools_lock:
            pool = self._pools.get(function)
        return pool.kill_all() if pool is not None else 0

    def __enter__(self) -> LocalGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # request handling ------------------------------------------------------------------------

    def match(self, method: str, path: str) -> tuple[_CompiledRoute, dict[str, str]] | None:
        """The most specific route for `method` and the (encoded) `path`, with its parameters."""
        best: tuple[_CompiledRoute, dict[str, str]] | None = None
        for compiled in self._routes:
            if compiled.route.method not in (method, "ANY"):
                continue
            m = compiled.pattern.fullmatch(path)
            if m is None:
                continue
            if best is None or compiled.specificity < best[0].specificity:
                names = _param_names(compiled.route.path)
                values = [unquote(v) for v in m.groups()]
                best = (compiled, dict(zip(names, values, strict=True)))
        return best

    def authorize(self, authorization: str | None) -> dict[str, str]:
        """API Gateway's JWT authorizer: the claims as strings, or a 401."""
        token = (authorization or "").strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        if not token:
            raise _HttpError(401, "Unauthorized", {"www-authenticate": "Bearer"})
        challenge = 'Bearer scope="" error="invalid_token" error_description="invalid token"'
        refused = _HttpError(401, "Unauthorized", {"www-authenticate": challenge})
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public_key,
                algorithms=["RS256"],
                issuer=self._issuer,
                options={"require": ["exp", "iss"], "verify_aud": False},
            )
        except jwt.PyJWTError:
            raise refused from None
        # `aud` must name a configured audience; API Gateway reads `client_id` only without `aud`
        presented = claims.get("aud", claims.get("client_id"))
        audiences = presented if isinstance(presented, list) else [presented]
        if not any(isinstance(a, str) and a in self._audience for a in audiences):
            raise refused
        return {name: stringify_claim(value) for name, value in claims.items()}

    def build_event(
        self,
        request: BaseHTTPRequestHandler,
        compiled: _CompiledRoute,
        path_parameters: dict[str, str],
        body: bytes,
        claims: dict[str, str] | None,
    ) -> dict[str, Any]:
        raw_path, _, raw_query = request.path.partition("?")
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in request.headers.items():
            key = name.lower()
            if key == "cookie":
                cookies.extend(c.strip() for c in value.split(";") if c.strip())
                continue
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        client_ip = request.client_address[0]
        headers.setdefault("x-forwarded-for", client_ip)
        headers.setdefault("x-forwarded-proto", "http")
        headers.setdefault("x-forwarded-port", str(self.port))
        domain = headers.get("host", f"{self._host}:{self.port}")
        now = datetime.now(UTC)
        request_context: dict[str, Any] = {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {
                "method": request.command,
                "path": unquote(raw_path),
                "protocol": request.request_version,
                "sourceIp": client_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": compiled.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        }
        if claims is not None:
            request_context["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": compiled.route_key,
            "rawPath": unquote(raw_path),
            "rawQueryString": raw_query,
        }
        if cookies:
            event["cookies"] = cookies
        event["headers"] = headers
        query: dict[str, str] = {}
        for name, value in parse_qsl(raw_query, keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        if query:
            event["queryStringParameters"] = query
        event["requestContext"] = request_context
        if path_parameters:
            event["pathParameters"] = path_parameters
        event["isBase64Encoded"] = False
        if body:
            text: str | None = None
            if _is_text(headers.get("content-type")):
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
            if text is None:
                event["body"] = base64.b64encode(body).decode("ascii")
                event["isBase64Encoded"] = True
            else:
                event["body"] = text
        return event

    def invoke(self, route: Route, event: dict[str, Any]) -> Any:
        """Run the route's function on one of its warm containers, as Lambda would; the
        function's errors raise InvocationError or InvocationTimeout."""
        with self._pools_lock:
            pool = self._pools.get(route.function)
            if pool is None:
                if self._stopping:
                    raise PoolClosed
                pool = FunctionPool(route.function, route.module, self._max_workers)
                self._pools[route.function] = pool
        deadline = time.time() + min(self._timeout, INTEGRATION_TIMEOUT_SECONDS)
        context = InvocationContext(
            function_name=route.function,
            aws_request_id=str(uuid.uuid4()),
            deadline_ms=int(deadline * 1000),
        )
        return pool.invoke(event, context)

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> _Response:
        """One request, its body already read: route, authorize, invoke, map the response."""
        found = self.match(request.command, urlsplit(request.path).path)
        if found is None:
            return _message(404, "Not Found")
        compiled, params = found
        try:
            claims = None
            if not compiled.route.public:
                claims = self.authorize(request.headers.get("authorization"))
        except _HttpError as err:
            return _message(err.status, err.message, err.headers)
        event = self.build_event(request, compiled, params, body, claims)
        try:
            result = self.invoke(compiled.route, event)
        except InvocationTimeout:
            if self._timeout < INTEGRATION_TIMEOUT_SECONDS:
                # Lambda stopped the function: a function error, as any other
                sys.stderr.write(f"Task timed out after {self._timeout:.2f} seconds\n")
                return _message(500, "Internal Server Error")
            return _message(503, "Service Unavailable")
        except InvocationError as err:
            # the traceback went to the log with the function's output; this is the runtime's line
            sys.stderr.write(f"{compiled.route.function}: {err}\n")
            return _message(500, "Internal Server Error")
        except PoolClosed:
            return _message(503, "Service Unavailable")
        try:
            response = to_http_response(result)
        except Exception:  # noqa: BLE001 - a malformed Lambda response is API Gateway's 500
            traceback.print_exc(file=sys.stderr)
            return _message(500, "Internal Server Error")
        response.headers.append(("apigw-requestid", event["requestContext"]["requestId"]))
        return response


def to_http_response(result: Any) -> _Response:
    """Map a payload 2.0 Lambda response to HTTP, with API Gateway's inference rules."""
    if not (isinstance(result, dict) and "statusCode" in result):
        body = json.dumps(result).encode()
        return _Response(200, [("content-type", "application/json")], body)
    status = result["statusCode"]
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ValueError(f"malformed Lambda response: statusCode {status!r}")
    headers: list[tuple[str, str]] = []
    for name, value in (result.get("headers") or {}).items():
        if name.lower() in ("content-length", "transfer-encoding", "connection"):
            continue
        headers.append((str(name), str(value)))
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(v)) for v in values)
    headers.extend(("set-cookie", str(c)) for c in result.get("cookies") or [])
    raw = result.get("body")
    if raw is None:
        body = b""
    elif not isinstance(raw, str):
        body = json.dumps(raw).encode()
    elif result.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise ValueError("malformed Lambda response: body is not base64") from exc
    else:
        body = raw.encode("utf-8")
    return _Response(status, headers, body)


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        return _read_chunked(request)
    length_header = request.headers.get("content-length")
    if not length_header:
        return b""
    try:
        length = int(length_header)
    except ValueError:
        raise _HttpError(400, "Bad Request") from None
    if length < 0:
        raise _HttpError(400, "Bad Request")
    if length > MAX_BODY_BYTES:
        raise _HttpError(413, "Request Entity Too Large")
    return request.rfile.read(length)


def _read_chunked(request: BaseHTTPRequestHandler) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = request.rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _HttpError(400, "Bad Request") from None
        if size == 0:
            while request.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        total += size
        if total > MAX_BODY_BYTES:
            raise _HttpError(413, "Request Entity Too Large")
        chunks.append(request.rfile.read(size))
        request.rfile.readline(1024)


def _discard_body(request: BaseHTTPRequestHandler, limit: int = 8 * MAX_BODY_BYTES) -> None:
    """Read what the client is still sending, so closing the socket does not reset it."""
    try:
        remaining = min(int(request.headers.get("content-length") or 0), limit)
    except ValueError:
        return
    while remaining > 0:
        chunk = request.rfile.read(min(remaining, 1 << 16))
        if not chunk:
            return
        remaining -= len(chunk)


def _log_path(request: BaseHTTPRequestHandler) -> str:
    path = urlsplit(request.path).path
    # pay links carry their bearer token in the path: never write it to a log
    return re.sub(r"^(/v1/pay/)[^/]+", r"\1***", path)[:300]


def _make_handler(gateway: LocalGateway) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "local-apigw"
        sys_version = ""

        def _serve(self) -> None:
            started = time.perf_counter()
            try:
                response = gateway.handle(self, _read_body(self))
            except _HttpError as err:
                _discard_body(self)
                response = _message(err.status, err.message, err.headers)
            except Exception:  # noqa: BLE001 - never let one request take the server down
                traceback.print_exc(file=sys.stderr)
                response = _message(500, "Internal Server Error")
            self.close_connection = True
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(response.body)))
            self.send_header("connection", "close")
            # Logged before the body goes out: a client that has its answer finds the line.
            elapsed = (time.perf_counter() - started) * 1000
            sys.stderr.write(
                f"gateway: {self.command} {_log_path(self)} {response.status} {elapsed:.0f}ms\n"
            )
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """No default request logging: it would include query strings."""

    return _Handler
