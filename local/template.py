"""Read template.yaml as the local stack and the tests need it: routes, functions and the table.

The local stack and the tests take everything from the template itself, so they cannot drift
from what `sam deploy` creates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that keeps CloudFormation's short-form tags (!Ref, !GetAtt, !Sub...)."""


def _cfn_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    name = (
        "Fn::GetAtt"
        if tag_suffix == "GetAtt"
        else ("Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}")
    )
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@cache
def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = yaml.load(f, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    return data


@dataclass(frozen=True)
class Route:
    method: str  # upper case
    path: str  # "/v1/clinics/{clinic_id}/..."
    function: str  # logical id, e.g. "PayInvoiceFunction"
    module: str  # "functions.pay_invoice.app"
    public: bool  # True when the route has Auth: Authorizer: NONE


def routes(path: Path = TEMPLATE) -> list[Route]:
    """Every HttpApi route of the template, with the handler module that serves it."""
    found: list[Route] = []
    for logical_id, resource in load_template(path)["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        code_uri = str(props["CodeUri"]).rstrip("/")
        module = code_uri.replace("/", ".") + "." + str(props["Handler"]).rsplit(".", 1)[0]
        for event in (props.get("Events") or {}).values():
            if event.get("Type") != "HttpApi":
                continue
            ev = event["Properties"]
            auth = (ev.get("Auth") or {}).get("Authorizer")
            found.append(
                Route(
                    method=str(ev["Method"]).upper(),
                    path=str(ev["Path"]),
                    function=logical_id,
                    module=module,
                    public=auth == "NONE",
                )
            )
    return found


def table_definition(logical_id: str = "PaymentsTable", path: Path = TEMPLATE) -> dict[str, Any]:
    """The create_table arguments of a template table (key schema, GSIs), for moto."""
    props = load_template(path)["Resources"][logical_id]["Properties"]
    args: dict[str, Any] = {
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    return args


def ttl_attribute(logical_id: str = "PaymentsTable", path: Path = TEMPLATE) -> str | None:
    spec = load_template(path)["Resources"][logical_id]["Properties"].get("TimeToLiveSpecification")
    return str(spec["AttributeName"]) if spec and spec.get("Enabled") else None
