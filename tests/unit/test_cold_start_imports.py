"""What each function imports at init, in a fresh interpreter: the functions that never call
Stripe never load stripe-python; those that do load it at init; none loads the PDF library or
stripe.params before it needs them; health imports no router but its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from local.template import ROOT
from tests.support.functions import CALLS_STRIPE

pytestmark = pytest.mark.unit

FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())
# One fresh interpreter loads the third-party framework every function imports first (none of
# it is what these tests look for), then each function's handler module is imported in a child
# forked from it: a clean slate for every function, without compiling Powertools 14 times.
# aiohttp is in the dev venv only (the Stripe fake's): stripe-python imports it when it can.
PROBE = """
import json, os, sys
sys.modules["aiohttp"] = None
layer, out, folders = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, layer)
import boto3, botocore.config, pydantic, requests, aws_xray_sdk.core
import aws_lambda_powertools, aws_lambda_powertools.event_handler
import aws_lambda_powertools.event_handler.openapi.params
assert not [m for m in sys.modules if m.split(".")[0] in ("stripe", "pydyf", "clinic_payments")]
children = []
for folder in folders:
    pid = os.fork()
    if pid == 0:
        sys.path.insert(0, folder)
        import app
        with open(os.path.join(out, os.path.basename(folder) + ".json"), "w") as f:
            json.dump(sorted(sys.modules), f)
        os._exit(0)
    children.append(pid)
sys.exit(max(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children))
"""


@pytest.fixture(scope="module")
def imported_at_init(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """The modules each function's handler module has imported at init."""
    out = tmp_path_factory.mktemp("imports")
    folders = [str(ROOT / "functions" / name) for name in FUNCTIONS]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "layers" / "shared"), str(out), *folders],
        env={**os.environ, "POWERTOOLS_TRACE_DISABLED": "true"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {name: set(json.loads((out / f"{name}.json").read_text())) for name in FUNCTIONS}


def test_every_function_is_classed_as_calling_stripe_or_not() -> None:
    assert set(FUNCTIONS) >= CALLS_STRIPE
    assert len(FUNCTIONS) == 14


@pytest.mark.parametrize("name", sorted(set(FUNCTIONS) - CALLS_STRIPE))
def test_a_function_that_never_calls_stripe_never_imports_it(
    name: str, imported_at_init: dict[str, set[str]]
) -> None:
    assert "stripe" not in imported_at_init[name]


@pytest.mark.parametrize("name", sorted(CALLS_STRIPE))
def test_a_function_that_calls_stripe_imports_it_at_init(
    name: str, imported_at_init: dict[str, set[str]]
) -> None:
    assert "stripe" in imported_at_init[name]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_no_function_imports_the_pdf_library_or_stripe_params_at_init(
    name: str, imported_at_init: dict[str, set[str]]
) -> None:
    assert {"pydyf", "stripe.params"} & imported_at_init[name] == set()


def test_health_imports_no_router_but_its_own(imported_at_init: dict[str, set[str]]) -> None:
    routers = {m for m in imported_at_init["health"] if m.startswith("clinic_payments.api.routes.")}
    assert routers == {"clinic_payments.api.routes.health"}
    assert "clinic_payments.wiring" not in imported_at_init["health"]


TRACING = """
import sys
sys.modules["aiohttp"] = None
sys.path.insert(0, sys.argv[1])
from clinic_payments.api import observability
assert "requests" not in sys.modules, "the tracer imported requests"
import stripe, requests
print(type(requests.Session.request).__name__)
"""


def test_stripe_calls_are_traced_though_requests_is_patched_only_once_imported() -> None:
    # As in Lambda with `Tracing: Active`: LAMBDA_TASK_ROOT set, tracing not disabled.
    env = {k: v for k, v in os.environ.items() if k != "POWERTOOLS_TRACE_DISABLED"}
    env |= {"LAMBDA_TASK_ROOT": str(ROOT), "AWS_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-c", TRACING, str(ROOT / "layers" / "shared")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "BoundFunctionWrapper"  # X-Ray's wrapper around each request
