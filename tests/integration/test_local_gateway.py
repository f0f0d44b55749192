"""The local gateway behaves like API Gateway HTTP API in front of a Lambda function."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from local import gateway as gateway_module
from local.gateway import MAX_BODY_BYTES, LocalGateway
from local.template import ROOT, Route
from local.tokens import LOCAL_AUDIENCE, LOCAL_ISSUER, generate_key, issue_token
from tests.conftest import Stack

pytestmark = pytest.mark.integration

PROBE = "tests.integration._gateway_probe_app"
LAYER_PROBE = "tests.integration._gateway_layer_probe_app"
# Bounds on a broken run, never measurements: a rendezvous gives up after MEET_SECONDS, and a
# worker whose gateway was killed has ORPHAN_SECONDS to notice.
MEET_SECONDS = 30
ORPHAN_SECONDS = 15
ROUTES = [
    Route("GET", "/probe/{thing}/items/{item_id}", "ProbeFunction", PROBE, False),
    Route("GET", "/probe/fixed/items/{item_id}", "FixedFunction", PROBE, False),
    Route("POST", "/probe/{thing}/items", "ProbeFunction", PROBE, False),
    Route("GET", "/public/echo", "PublicFunction", PROBE, True),
    Route("POST", "/public/echo", "PublicFunction", PROBE, True),
    Route("GET", "/public/plain", "PublicFunction", PROBE, True),
    Route("GET", "/public/cookies", "PublicFunction", PROBE, True),
    Route("GET", "/public/binary", "PublicFunction", PROBE, True),
    Route("GET", "/public/print", "PublicFunction", PROBE, True),
    Route("GET", "/public/not-json", "PublicFunction", PROBE, True),
    Route("GET", "/public/boom", "BoomFunction", PROBE, True),
    Route("GET", "/public/boom/container", "BoomFunction", PROBE, True),
    Route("GET", "/public/meet", "MeetFunction", PROBE, True),
    Route("GET", "/public/meet-too", "OtherMeetFunction", PROBE, True),
    Route("GET", "/public/container", "ContainerFunction", PROBE, True),
    Route("GET", "/public/other/container", "OtherContainerFunction", PROBE, True),
    Route("GET", "/public/exit", "ExitFunction", PROBE, True),
    Route("GET", "/public/exit/container", "ExitFunction", PROBE, True),
    Route("GET", "/public/sleep", "SleepFunction", PROBE, True),
    Route("GET", "/public/sleep/container", "SleepFunction", PROBE, True),
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


def _get_json(gw: LocalGateway, path: str) -> dict[str, Any]:
    status, _, body = call(gw, "GET", path)
    assert status == 200, body
    data: dict[str, Any] = json.loads(body)
    return data


def _side_by_side(gw: LocalGateway, paths: list[str]) -> list[dict[str, Any]]:
    """GET each path from its own thread, all at once; the answers in the order of `paths`."""
    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(lambda path: _get_json(gw, path), paths))


def _meet(path: str, folder: Path, n: int, name: str, wait: float = MEET_SECONDS) -> str:
    return f"{path}?dir={quote(str(folder))}&n={n}&name={name}&wait={wait}"


def test_requests_to_one_function_run_at_once_in_separate_containers(
    gateway: LocalGateway, tmp_path: Path
) -> None:
    # Each request waits until all three are in flight: one event at a time per function would
    # leave the first alone at the rendezvous.
    answers = _side_by_side(
        gateway, [_meet("/public/meet", tmp_path, 3, f"caller{i}") for i in range(3)]
    )
    assert [a["met"] for a in answers] == [True, True, True], answers
    pids = {a["pid"] for a in answers}
    assert len(pids) == 3, answers  # one container each, as Lambda scales out
    assert set(gateway.worker_pids("MeetFunction")) >= pids


def test_different_functions_run_at_once(gateway: LocalGateway, tmp_path: Path) -> None:
    answers = _side_by_side(
        gateway,
        [_meet("/public/meet", tmp_path, 2, "one"), _meet("/public/meet-too", tmp_path, 2, "two")],
    )
    assert [a["met"] for a in answers] == [True, True], answers
    assert answers[0]["pid"] != answers[1]["pid"]


def test_requests_beyond_the_cap_wait_for_a_free_container(
    key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    with LocalGateway(routes=ROUTES, public_key=key.public_key(), max_workers_per_function=1) as gw:
        answers = _side_by_side(
            gw, [_meet("/public/meet", tmp_path, 2, f"caller{i}", wait=1) for i in range(2)]
        )
    # The one container ran them in turn: the first was alone, the second found it done.
    first, second = sorted(answers, key=lambda a: len(a["arrived"]))
    assert (first["met"], len(first["arrived"])) == (False, 1), answers
    assert (second["met"], second["arrived"]) == (True, ["caller0", "caller1"]), answers
    assert first["pid"] == second["pid"]


def test_a_warm_container_serves_the_next_request_and_keeps_its_state_to_itself(
    gateway: LocalGateway,
) -> None:
    first = _get_json(gateway, "/public/container")
    second = _get_json(gateway, "/public/container")
    assert second["pid"] == first["pid"]  # warm: no new container for a request after another
    assert second["events_seen"] == first["events_seen"] + 1
    # Another function importing the same module has its own process and module state.
    other = _get_json(gateway, "/public/other/container")
    assert other["pid"] != first["pid"]
    assert other["events_seen"] == 1
    assert _get_json(gateway, "/public/container")["events_seen"] == second["events_seen"] + 1


def test_a_container_gets_the_environment_of_the_gateway_process(
    key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_PROBE_SETTING", "from-the-stack")
    with LocalGateway(routes=ROUTES, public_key=key.public_key()) as gw:
        assert _get_json(gw, "/public/container")["env"] == "from-the-stack"


def test_function_output_reaches_the_gateway_log_before_its_response(
    gateway: LocalGateway, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    status, _, body = call(gateway, "GET", "/public/print")
    assert (status, json.loads(body)) == (200, {"printed": True})
    out, err = capfd.readouterr()
    assert "probe-stdout-marker " in out
    assert "probe-stderr-marker" in err
    assert "probe-stdout-marker" not in err


def test_a_result_that_is_not_json_is_500(gateway: LocalGateway) -> None:
    status, _, body = call(gateway, "GET", "/public/not-json")
    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})


def test_a_function_whose_process_dies_is_500_and_its_container_replaced(
    gateway: LocalGateway,
) -> None:
    before = _get_json(gateway, "/public/exit/container")["pid"]
    status, _, body = call(gateway, "GET", "/public/exit")
    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})
    assert not _alive(before)
    after = _get_json(gateway, "/public/exit/container")
    assert after["pid"] != before
    assert after["events_seen"] == 1  # a cold start


def test_a_function_past_its_timeout_is_500_and_its_container_replaced(
    key: rsa.RSAPrivateKey, capfd: pytest.CaptureFixture[str]
) -> None:
    # Long enough for a cold start on a busy 2-core machine (the first call starts it).
    with LocalGateway(routes=ROUTES, public_key=key.public_key(), timeout_seconds=5) as gw:
        before = _get_json(gw, "/public/sleep/container")["pid"]
        status, _, body = call(gw, "GET", "/public/sleep?seconds=60")
        assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})
        assert "Task timed out after 5.00 seconds" in capfd.readouterr().err
        assert not _alive(before)
        assert _get_json(gw, "/public/sleep/container")["pid"] != before


def test_a_function_outliving_the_integration_timeout_is_503(
    key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A function allowed longer than the HTTP API waits (30 s, shortened here): API Gateway
    # gives up first and answers 503.
    monkeypatch.setattr(gateway_module, "INTEGRATION_TIMEOUT_SECONDS", 1.0)
    with LocalGateway(routes=ROUTES, public_key=key.public_key(), timeout_seconds=60) as gw:
        status, _, body = call(gw, "GET", "/public/sleep?seconds=60")
        assert (status, json.loads(body)) == (503, {"message": "Service Unavailable"})


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie left to an init that does not reap is not running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_stop_ends_every_container(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    gw = LocalGateway(routes=ROUTES, public_key=key.public_key()).start()
    try:
        answers = _side_by_side(
            gw, [_meet("/public/meet", tmp_path, 2, f"caller{i}") for i in range(2)]
        )
        pids = {a["pid"] for a in answers}
        assert len(pids) == 2
        assert all(_alive(pid) for pid in pids)
    finally:
        gw.stop()
    assert not any(_alive(pid) for pid in pids)
    assert gw.worker_pids("MeetFunction") == []


_ORPHAN_SCRIPT = """
import json, sys, time, urllib.request
from local.gateway import LocalGateway
from local.template import Route
from local.tokens import generate_key
route = Route("GET", "/public/container", "C", "tests.integration._gateway_probe_app", True)
gw = LocalGateway(routes=[route], public_key=generate_key().public_key()).start()
with urllib.request.urlopen(gw.url + "/public/container") as response:
    print(json.loads(response.read())["pid"], flush=True)
time.sleep(120)
"""


def test_containers_do_not_outlive_a_killed_gateway() -> None:
    gateway_process = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert gateway_process.stdout is not None
        worker = int(gateway_process.stdout.readline())
        assert _alive(worker)
    finally:
        gateway_process.kill()
        gateway_process.wait()
    deadline = time.monotonic() + ORPHAN_SECONDS
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), "the worker outlived its gateway"


def test_nothing_of_one_request_survives_into_the_next_in_a_warm_container(
    stack: Stack, key: rsa.RSAPrivateKey, capfd: pytest.CaptureFixture[str]
) -> None:
    """Three requests one after another on the same container of a function built like the
    project's: a caller, a pay-link-like Idempotency-Key scope and log keys each stay with
    their own request."""
    clinic = f"gw_{secrets.token_hex(4)}"
    staff_path = f"/v1/clinics/{clinic}/patients/pat_1/probe-items"
    routes = [
        Route(
            "POST",
            "/v1/clinics/{clinic_id}/patients/{patient_id}/probe-items",
            "LayerProbeFunction",
            LAYER_PROBE,
            False,
        ),
        Route("POST", "/v1/probe-links/{token}/items", "LayerProbeFunction", LAYER_PROBE, True),
    ]
    json_type = ("Content-Type", "application/json")
    key_header = ("Idempotency-Key", "same-key-every-time")

    def post(path: str, note: str, token: str | None = None) -> dict[str, Any]:
        body = json.dumps({"note": note}).encode()
        status, _, raw = call(gw, "POST", path, body, [json_type, key_header], token)
        assert status == 201, raw
        answer: dict[str, Any] = json.loads(raw)
        return answer

    capfd.readouterr()
    with LocalGateway(routes=routes, public_key=key.public_key()) as gw:
        first = post(staff_path, "note-one", issue_token("staff", clinic, sub="staff-one", key=key))
        link = post(f"/v1/probe-links/{secrets.token_hex(8)}/items", "note-two")
        second = post(
            staff_path, "note-three", issue_token("staff", clinic, sub="staff-two", key=key)
        )
    out = capfd.readouterr().out

    assert first["pid"] == link["pid"] == second["pid"]  # one warm container served all three
    # (answered, resource_fresh, resource_id: the idempotency middleware's, for this request)
    per_request = ["answered", "resource_fresh", "resource_id"]
    assert first["context_keys"] == sorted(["caller", *per_request])
    assert link["context_keys"] == sorted(["idempotency_scope", *per_request])  # no caller
    assert second["context_keys"] == sorted(["caller", *per_request])
    assert (first["caller"], link["caller"], second["caller"]) == ("staff-one", None, "staff-two")
    # Same key each time: scoped to its own caller or link, never to the one before (a leaked
    # link scope would make the third request a reused key, a leaked caller a replay).
    assert len({first["resource_id"], link["resource_id"], second["resource_id"]}) == 3
    # Log keys appended by one request are gone when the next arrives, and from its log lines.
    for found in (first, link, second):
        assert "note" not in found["log_keys"]
        assert "item_id" not in found["log_keys"]
    lines = [json.loads(line) for line in out.splitlines() if '"probe item"' in line]
    assert [(line["note"], line["item_id"]) for line in lines] == [
        ("note-one", first["resource_id"]),
        ("note-two", link["resource_id"]),
        ("note-three", second["resource_id"]),
    ]
    assert len({line["correlation_id"] for line in lines}) == 3


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
