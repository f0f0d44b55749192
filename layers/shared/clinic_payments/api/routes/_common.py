"""Small helpers shared by the routers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from clinic_payments.api.errors import json_response
from clinic_payments.api.models import ErrorOut

PATIENT = "/v1/clinics/<clinic_id>/patients/<patient_id>"
CLINIC = "/v1/clinics/<clinic_id>"


def ok(model: BaseModel, status: int = 200) -> Any:
    return json_response(status, model.model_dump(mode="json"))


def responses(status: int, model: type[BaseModel], *errors: int) -> dict[int, Any]:
    """OpenAPI responses of a route: its success model and the envelope for each error."""
    out: dict[int, Any] = {
        status: {"description": "OK", "content": {"application/json": {"model": model}}}
    }
    return out | _errors(errors)


def no_content(*errors: int) -> dict[int, Any]:
    """OpenAPI responses of a route that answers 204 without a body."""
    return {204: {"description": "No content"}} | _errors(errors)


def _errors(codes: tuple[int, ...]) -> dict[int, Any]:
    return {
        code: {"description": "Error", "content": {"application/json": {"model": ErrorOut}}}
        for code in codes
    }
