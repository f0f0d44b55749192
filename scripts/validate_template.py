"""Prove a SAM template offline: run the SAM transform here, then cfn-lint its CloudFormation.

cfn-lint on its own reads the SAM resources before they are expanded; linting the translated
template also checks what SAM generates (roles, permissions, routes, the layer version), so a
bad runtime or a dangling !Ref fails here rather than in a CloudFormation change set.

Usage: python scripts/validate_template.py [template.yaml]

Exit status 1 on any error-level match, on a template SAM refuses to translate, and on W3037
(an IAM action that does not exist: with hand-written least-privilege policies that is a
permission silently missing). Other warnings and informational matches are printed and allowed:
they are advice, and `sam validate --lint` (the Makefile's second step) applies cfn-lint's own
defaults to the untranslated template.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cfnlint.api import lint
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

REGION = "us-east-1"
# Local paths that `sam package` uploads and replaces with S3 locations before CloudFormation
# runs the transform; the transform itself accepts nothing else.
PACKAGED_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
}
PLACEHOLDER_BUCKET = "offline-validation"
# Warnings that fail the run like errors do (see the module docstring).
FAILING_WARNINGS = frozenset({"W3037"})


class OfflineManagedPolicyLoader(ManagedPolicyLoader):
    """Never asks IAM. The translator resolves AWS managed policy names from the map bundled
    with it first, and only falls back to this loader for names it does not know: those stay
    unresolved and cfn-lint reports them."""

    def __init__(self) -> None:
        """No IAM client: there is nothing to call."""

    def load(self) -> dict[str, str]:
        return {}


@contextmanager
def _region(region: str) -> Iterator[None]:
    # The translator reads the region (and from it the partition) from a default boto3
    # session; the environment variable is the one setting it takes without AWS config.
    saved = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region
    try:
        yield
    finally:
        if saved is None:
            del os.environ["AWS_DEFAULT_REGION"]
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved


def as_packaged(sam_template: dict[str, Any]) -> dict[str, Any]:
    """A copy of the template with each local code path replaced as `sam package` would."""
    packaged = copy.deepcopy(sam_template)
    for resource in packaged.get("Resources", {}).values():
        prop = PACKAGED_PROPERTIES.get(resource.get("Type"))
        props = resource.get("Properties") or {}
        local_path = props.get(prop)
        if isinstance(local_path, str) and not local_path.startswith("s3://"):
            props[prop] = f"s3://{PLACEHOLDER_BUCKET}/{local_path.strip('/')}.zip"
    return packaged


def translate(sam_template: dict[str, Any], region: str = REGION) -> dict[str, Any]:
    """The CloudFormation that the SAM transform makes of `sam_template` (left unchanged)."""
    with _region(region):
        return transform(
            as_packaged(sam_template),
            {"AWS::Region": region, "AWS::Partition": "aws"},
            OfflineManagedPolicyLoader(),
        )


def _fails(match: Any) -> bool:
    return match.rule.severity == "error" or match.rule.id in FAILING_WARNINGS


def _describe(match: Any) -> str:
    where = "/".join(str(part) for part in getattr(match, "path", None) or ())
    level = "error" if _fails(match) else match.rule.severity
    return f"{level.upper():<13} {match.rule.id} {where or '-'}: {match.message}"


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "template.yaml")
    sam_template = yaml_parse(path.read_text(encoding="utf-8"))
    try:
        cloudformation = translate(sam_template)
    except InvalidDocumentException as exc:
        print(f"{path}: the SAM transform rejects the template:")
        for cause in exc.causes:
            print(f"  ERROR {cause.message}")
        return 1

    matches = lint(json.dumps(cloudformation, indent=2), regions=[REGION])
    for match in matches:
        print(_describe(match))
    errors = sum(1 for m in matches if _fails(m))
    resources = len(cloudformation.get("Resources", {}))
    print(
        f"{path}: SAM transform OK ({resources} CloudFormation resources); cfn-lint in {REGION}: "
        f"{errors} failing, {len(matches) - errors} allowed (warning/informational)"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
