"""The local gateway behaves like API Gateway HTTP API in front of a Lambda function."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from local.gateway import MAX_BODY_BYTES, LocalGateway
from local.template import Route
from local.tokens import LOCAL_AUDIENCE, LOCAL_ISSUER, generate_key, issue_token
from tests.integration import _gateway_probe_app as probe

pytestmark = pytest.mark.integration

PROBE = "tests.integration._gateway_probe_app"
ROUTES = [
    Route("GET", "/probe/{thing}/items/{item_id}", "ProbeFunction", PROBE, False),
    Route("GET", "/probe/fixed/items/{item_id}", "FixedFunction", PROBE, False),
    Route("POST", "/probe/{thing}/items", "ProbeFunction", PROBE, False),
    Route("GET", "/public/echo", "PublicFunction", PROBE, True),
    Route("POST", "/public/echo", "PublicFunction", PROBE, True),
    Route("GET", "/public/boom", "PublicFunction", PROBE, True),
    Route("GET", "/public/plain", "PublicFunction", PROBE, True),
    Route("GET", "/public/cookies", "PublicFunction", PROBE, True),
    Route("GET", "/public/binary", "PublicFunction", PROBE, True),
    Route("GET", "/public/wait", "WaiterFunction", PROBE, True),
    Route("GET", "/public/signal", "SignalFunction", PROBE, True),
    Route("GET", "/public/same/signal", "WaiterFunction", PROBE, True),
]

Response = tuple[int, http.client.HTTPMessage, bytes]


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def gateway(key: rsa.RSAPrivateKey) -> Iterator[LocalGateway]:
    gw = LocalGateway(routes=ROUTES, public_key=key.public_key()).start()
    yield gw
    gw.stop()


def call(
    gw: LocalGateway,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: list[tuple[str, str]] | None = None,
    token: str | None = None,
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.putrequest(method, path)
        for name, value in headers or []:
            conn.putheader(name, value)
        if token is not None:
            conn.putheader("Authorization", f"Bearer {token}")
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def echoed(response: Response) -> dict[str, Any]:
    status, _, body = response
    assert status == 200, body
    data: dict[str, Any] = json.loads(body)
    return data


def test_valid_token_reaches_the_handler_with_api_gateway_claims(
    gateway: LocalGateway, key: rsa.RSAPrivateKey
) -> None:
    token = issue_token("patient", "demo", ["pat_1", "pat_2"], sub="user-1", key=key)
    got = echoed(call(gateway, "GET", "/probe/abc/items/it%201?a=1&a=2&b=&c=x%20y", token=token))
    event = got["event"]
    claims = event["requestContext"]["authorizer"]["jwt"]["claims"]
    assert all(isinstance(v, str) for v in claims.values())
    assert claims["patient_ids"] == "[pat_1 pat_2]"
    assert claims["sub"] == "user-1"
    assert claims["clinic_id"] == "demo"
    assert claims["role"] == "patient"
    assert claims["iss"] == LOCAL_ISSUER
    assert claims["aud"] == LOCAL_AUDIENCE
    assert claims["exp"].isdigit()
    assert int(claims["exp"]) - int(claims["iat"]) == 43200
    assert event["requestContext"]["authorizer"]["jwt"]["scopes"] is None

    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /probe/{thing}/items/{item_id}"
    assert event["requestContext"]["routeKey"] == "GET /probe/{thing}/items/{item_id}"
    assert event["rawPath"] == "/probe/abc/items/it 1"
    assert event["rawQueryString"] == "a=1&a=2&b=&c=x%20y"
    assert event["pathParameters"] == {"thing": "abc", "item_id": "it 1"}
    assert event["queryStringParameters"] == {"a": "1,2", "b": "", "c": "x y"}
    assert event["isBase64Encoded"] is False
    assert "body" not in event
    assert "cookies" not in event


def test_event_headers_request_context_and_lambda_context(
    gateway: LocalGateway, key: rsa.RSAPrivateKey
) -> None:
    token = issue_token("staff", "demo", key=key)
    headers = [
        ("X-Multi", "one"),
        ("X-Multi", "two"),
        ("User-Agent", "probe-agent/1.0"),
        ("Cookie", "a=1; b=2"),
    ]
    got = echoed(call(gateway, "GET", "/probe/x/items/y", headers=headers, token=token))
    event, context = got["event"], got["context"]
    assert all(name == name.lower() for name in event["headers"])
    assert event["headers"]["x-multi"] == "one,two"
    assert event["headers"]["authorization"] == f"Bearer {token}"
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["a=1", "b=2"]
    assert "queryStringParameters" not in event
    assert event["rawQueryString"] == ""

    ctx = event["requestContext"]
    assert ctx["apiId"] == "local"
    assert ctx["stage"] == "$default"
    assert ctx["http"] == {
        "method": "GET",
        "path": "/probe/x/items/y",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "probe-agent/1.0",
    }
    assert ctx["domainName"] == f"127.0.0.1:{gateway.port}"
    assert ctx["requestId"]
    assert isinstance(ctx["timeEpoch"], int)
    assert abs(ctx["timeEpoch"] / 1000 - time.time()) < 60
    assert ctx["time"].endswith(" +0000")
    assert ctx["accountId"].isdigit()

    assert context["function_name"] == "ProbeFunction"
    assert context["memory_limit_in_mb"] == 512
    assert context["invoked_function_arn"].endswith(":function:ProbeFunction")
    assert context["log_group_name"] == "/aws/lambda/ProbeFunction"
    assert context["aws_request_id"]
    assert 0 < context["remaining_ms"] <= 29000


def test_the_most_specific_route_wins(gateway: LocalGateway, key: rsa.RSAPrivateKey) -> None:
    token = issue_token("staff", "demo", key=key)
    event = echoed(call(gateway, "GET", "/probe/fixed/items/9", token=token))["event"]
    assert event["routeKey"] == "GET /probe/fixed/items/{item_id}"
    assert event["pathParameters"] == {"item_id": "9"}


def _expect_unauthorized(response: Response) -> None:
    status, headers, body = response
    assert status == 401
    assert json.loads(body) == {"message": "Unauthorized"}
    assert headers["www-authenticate"].startswith("Bearer")


def test_missing_token_is_401(gateway: LocalGateway) -> None:
    _expect_unauthorized(call(gateway, "GET", "/probe/x/items/y"))
    _expect_unauthorized(call(gateway, "GET", "/probe/x/items/y", headers=[("Authorization", "")]))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"ttl_seconds": 10, "now": int(time.time()) - 60}, id="expired"),
        pytest.param({"now": int(time.time()) + 3600}, id="not-yet-valid"),
        pytest.param({"audience": "someone-else"}, id="wrong-audience"),
        pytest.param({"issuer": "https://evil.example/"}, id="wrong-issuer"),
        pytest.param({"key": generate_key()}, id="wrong-signature"),
    ],
)
def test_bad_tokens_are_401(
    gateway: LocalGateway, key: rsa.RSAPrivateKey, kwargs: dict[str, Any]
) -> None:
    token = issue_token("admin", "demo", **{"key": key, **kwargs})
    _expect_unauthorized(call(gateway, "GET", "/probe/x/items/y", token=token))


def test_garbage_and_unsigned_tokens_are_401(gateway: LocalGateway) -> None:
    unsigned = jwt.encode(
        {"iss": LOCAL_ISSUER, "aud": LOCAL_AUDIENCE, "exp": int(time.time()) + 60},
        "",
        algorithm="none",
    )
    for token in ("not-a-jwt", unsigned):
        _expect_unauthorized(call(gateway, "GET", "/probe/x/items/y", token=token))


def test_unknown_route_and_wrong_method_are_404(
    gateway: LocalGateway, key: rsa.RSAPrivateKey
) -> None:
    token = issue_token("admin", "demo", key=key)
    for method, path, tok in [
        ("GET", "/nope", None),
        ("GET", "/nope", token),
        ("DELETE", "/probe/x/items/y", token),
        ("GET", "/probe/x/items/y/", token),
        ("PUT", "/public/echo", None),
    ]:
        status, headers, body = call(gateway, method, path, token=tok)
        assert (status, json.loads(body)) == (404, {"message": "Not Found"}), (method, path)
        assert headers["content-type"] == "application/json"


def test_public_route_needs_no_token(gateway: LocalGateway) -> None:
    event = echoed(call(gateway, "GET", "/public/echo"))["event"]
    assert event["routeKey"] == "GET /public/echo"
    assert "authorizer" not in event["requestContext"]
    assert "pathParameters" not in event


def test_text_body_round_trips(gateway: LocalGateway, key: rsa.RSAPrivateKey) -> None:
    payload = json.dumps({"note": "Zoë paid €12", "n": 1}).encode()
    token = issue_token("staff", "demo", key=key)
    headers = [("Content-Type", "application/json; charset=utf-8")]
    event = echoed(
        call(gateway, "POST", "/probe/x/items", body=payload, headers=headers, token=token)
    )["event"]
    assert event["isBase64Encoded"] is False
    assert event["body"] == payload.decode()
    assert event["routeKey"] == "POST /probe/{thing}/items"
    assert event["pathParameters"] == {"thing": "x"}


@pytest.mark.parametrize(
    ("content_type", "payload"),
    [
        ("application/octet-stream", b"\x00\x01binary\xff"),
        ("application/json", b"\xff\xfe not utf-8"),
        ("image/png", b"plain ascii but an image type"),
    ],
)
def test_binary_body_is_base64(gateway: LocalGateway, content_type: str, payload: bytes) -> None:
    headers = [("Content-Type", content_type)]
    event = echoed(call(gateway, "POST", "/public/echo", body=payload, headers=headers))["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


def test_body_over_10_mb_is_413(gateway: LocalGateway) -> None:
    status, _, body = call(gateway, "POST", "/public/echo", body=b"x" * (MAX_BODY_BYTES + 1))
    assert status == 413
    assert json.loads(body) == {"message": "Request Entity Too Large"}


def test_handler_exception_is_500_without_internals(
    gateway: LocalGateway, capfd: pytest.CaptureFixture[str]
) -> None:
    status, _, body = call(gateway, "GET", "/public/boom")
    assert status == 500
    assert json.loads(body) == {"message": "Internal Server Error"}
    assert b"probe-traceback-marker" not in body
    assert b"Traceback" not in body
    assert "probe-traceback-marker" in capfd.readouterr().err  # the log gets it


def test_plain_return_value_is_200_json(gateway: LocalGateway) -> None:
    status, headers, body = call(gateway, "GET", "/public/plain")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"hello": "world"}


def test_status_headers_and_cookies_are_mapped(gateway: LocalGateway) -> None:
    status, headers, body = call(gateway, "GET", "/public/cookies")
    assert status == 201
    assert headers["x-probe"] == "yes"
    assert headers.get_all("set-cookie") == ["a=1; Path=/; HttpOnly", "b=2"]
    assert body == b"created"


def test_base64_response_body_is_decoded(gateway: LocalGateway) -> None:
    status, headers, body = call(gateway, "GET", "/public/binary")
    assert status == 200
    assert headers["content-type"] == "application/octet-stream"
    assert body == b"\x00\xffbinary"


def _wait_in_background(gw: LocalGateway, results: list[Response]) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: results.append(call(gw, "GET", "/public/wait?timeout=1.5"))
    )
    thread.start()
    assert probe.waiting.wait(10), "the waiting handler never started"
    return thread


def test_different_functions_run_concurrently(gateway: LocalGateway) -> None:
    probe.reset()
    results: list[Response] = []
    waiter = _wait_in_background(gateway, results)
    assert call(gateway, "GET", "/public/signal")[0] == 200
    waiter.join(10)
    assert json.loads(results[0][2]) == {"signalled": True}


def test_one_function_runs_one_event_at_a_time(gateway: LocalGateway) -> None:
    probe.reset()
    results: list[Response] = []
    waiter = _wait_in_background(gateway, results)
    # same function: this call waits for the running one, which therefore never sees the signal
    assert call(gateway, "GET", "/public/same/signal")[0] == 200
    waiter.join(10)
    assert json.loads(results[0][2]) == {"signalled": False}


def test_access_log_has_no_headers_or_bodies(
    gateway: LocalGateway, key: rsa.RSAPrivateKey, capfd: pytest.CaptureFixture[str]
) -> None:
    token = issue_token("staff", "demo", key=key)
    secret_body = b'{"card": "4242424242424242"}'
    status, _, _ = call(
        gateway,
        "POST",
        "/probe/x/items?q=secret-query",
        body=secret_body,
        headers=[("Content-Type", "application/json")],
        token=token,
    )
    assert status == 200
    err = capfd.readouterr().err
    assert "POST /probe/x/items 200" in err
    assert token not in err
    assert "4242424242424242" not in err
    assert "secret-query" not in err


def _can_listen(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
    return True


def test_stop_frees_the_port(key: rsa.RSAPrivateKey) -> None:
    gw = LocalGateway(routes=ROUTES, public_key=key.public_key()).start()
    port = gw.port
    assert gw.url == f"http://127.0.0.1:{port}"
    assert call(gw, "GET", "/public/plain")[0] == 200
    assert not _can_listen(port)
    gw.stop()
    assert _can_listen(port)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pytest.fail("the stopped gateway still accepts connections")


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        LocalGateway("0.0.0.0", routes=ROUTES)  # noqa: S104 - refused, never bound
