"""The OpenAPI document HealthFunction serves is a committed file: it must say what the routers
say. After changing a route or a model, `make openapi` writes it again."""

from __future__ import annotations

import json

import pytest
from clinic_payments.api.routes.health import OPENAPI_DOCUMENT

from local.template import routes
from scripts.write_openapi import document

pytestmark = pytest.mark.unit


def test_committed_openapi_document_is_the_one_the_routers_generate() -> None:
    committed = OPENAPI_DOCUMENT.read_text(encoding="utf-8")
    assert committed == document(), "the OpenAPI document is stale: run `make openapi`"


def test_committed_openapi_document_lists_every_route_of_the_template() -> None:
    paths = json.loads(OPENAPI_DOCUMENT.read_text(encoding="utf-8"))["paths"]
    documented = {
        (method.upper(), path) for path, operations in paths.items() for method in operations
    }
    served_as_the_document = {("GET", "/v1/openapi.json"), ("GET", "/v1/docs")}
    missing = {(r.method, r.path) for r in routes()} - documented - served_as_the_document
    assert missing == set()
