"""template.yaml is what gets deployed: check its promises, before and after the SAM transform."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

import pytest

from local.template import ROOT, load_template, routes, table_definition, ttl_attribute
from scripts.validate_template import translate

pytestmark = pytest.mark.unit

ALLOWED_PATH_PARAMETERS = {
    "clinic_id",
    "patient_id",
    "invoice_id",
    "payment_id",
    "account_id",
    "pm_id",
    "token",
}
PUBLIC_ROUTES = {
    ("GET", "/v1/health"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/docs"),
    ("POST", "/v1/webhooks/stripe/{clinic_id}/{account_id}"),
    ("GET", "/v1/pay/{token}"),
    ("POST", "/v1/pay/{token}/payments"),
}
SECRETS_PREFIX_ARN = (
    "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}"
    ":secret:${ClinicSecretsPrefix}/*"
)
# Least privilege, function by function: the template's own managed policies each one gets.
EXPECTED_POLICIES = {
    "HealthFunction": set(),
    "CreateInvoiceFunction": {"PaymentsTableWritePolicy"},
    "ReadAccountFunction": {"PaymentsTableReadPolicy"},
    # Functions that settle payments email receipts.
    "PayInvoiceFunction": {
        "PaymentsTableWritePolicy",
        "ClinicStripeSecretsReadPolicy",
        "ReceiptsEmailSendPolicy",
    },
    "StripeWebhookFunction": {
        "PaymentsTableWritePolicy",
        "ClinicStripeSecretsReadPolicy",
        "ReceiptsEmailSendPolicy",
    },
    "ReconcilePaymentsFunction": {
        "PaymentsTableWritePolicy",
        "ClinicStripeSecretsReadPolicy",
        "ReceiptsEmailSendPolicy",
    },
    "DocumentsFunction": {"PaymentsTableReadPolicy"},
    "PayLinkFunction": {
        "PaymentsTableWritePolicy",
        "ClinicStripeSecretsReadPolicy",
        "PayLinkSigningKeyReadPolicy",
        "ReceiptsEmailSendPolicy",
    },
    "AccountCreditFunction": {"PaymentsTableWritePolicy"},
    "RefundPaymentFunction": {"PaymentsTableWritePolicy", "ClinicStripeSecretsReadPolicy"},
    "SavedCardsFunction": {"PaymentsTableWritePolicy", "ClinicStripeSecretsReadPolicy"},
    "TopupCreditFunction": {
        "PaymentsTableWritePolicy",
        "ClinicStripeSecretsReadPolicy",
        "ReceiptsEmailSendPolicy",
    },
    "ClinicAdminFunction": {
        "PaymentsTableWritePolicy",
        "ClinicStripeSecretsReadPolicy",
        "ClinicStripeSecretsWritePolicy",
    },
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def cloudformation(template: dict[str, Any]) -> dict[str, Any]:
    """The template as CloudFormation will run it, after the SAM transform (offline)."""
    return translate(template)


def resources_of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allow_statements(cloudformation: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every Allow statement written into the stack: managed policies and inline role policies."""
    documents: list[tuple[str, dict[str, Any]]] = []
    for logical_id, resource in cloudformation["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            documents.append((logical_id, props["PolicyDocument"]))
        if resource["Type"] == "AWS::IAM::Role":
            documents += [(logical_id, p["PolicyDocument"]) for p in props.get("Policies", [])]
    return [
        (owner, statement)
        for owner, document in documents
        for statement in as_list(document["Statement"])
        if statement["Effect"] == "Allow"
    ]


def test_every_function_runs_python313_on_arm64_with_the_shared_layer(
    template: dict[str, Any], cloudformation: dict[str, Any]
) -> None:
    globals_ = template["Globals"]["Function"]
    assert globals_["Runtime"] == "python3.13"
    assert globals_["Architectures"] == ["arm64"]
    assert globals_["Layers"] == [{"Ref": "SharedLayer"}]
    layer_ids = set(resources_of_type(cloudformation, "AWS::Lambda::LayerVersion"))
    functions = resources_of_type(cloudformation, "AWS::Lambda::Function")
    assert set(functions) == set(EXPECTED_POLICIES)
    for logical_id, function in functions.items():
        props = function["Properties"]
        assert props["Runtime"] == "python3.13", logical_id
        assert props["Architectures"] == ["arm64"], logical_id
        assert [layer["Ref"] for layer in props["Layers"]] == [next(iter(layer_ids))], logical_id
        assert props["TracingConfig"] == {"Mode": "Active"}, logical_id


def test_shared_layer_builds_for_python313_on_arm64(template: dict[str, Any]) -> None:
    layer = template["Resources"]["SharedLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == "layers/shared/"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}
    assert (ROOT / "layers/shared/requirements.txt").is_file()


def test_logging_never_includes_the_event(template: dict[str, Any]) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_LOGGER_LOG_EVENT"] == "false"
    assert variables["POWERTOOLS_DEV"] == "false"
    assert variables["TABLE_NAME"] == {"Ref": "PaymentsTable"}
    assert variables["CLINIC_SECRETS_PREFIX"] == {"Ref": "ClinicSecretsPrefix"}


def test_route_path_parameters_use_the_agreed_names() -> None:
    for route in routes():
        names = set(re.findall(r"{([^}]+)}", route.path))
        assert names <= ALLOWED_PATH_PARAMETERS, f"{route.method} {route.path}"


def test_routes_are_unique() -> None:
    keys = [(route.method, route.path) for route in routes()]
    assert len(keys) == len(set(keys))


def test_only_health_docs_the_stripe_webhook_and_pay_links_are_public(
    template: dict[str, Any], cloudformation: dict[str, Any]
) -> None:
    assert {(r.method, r.path) for r in routes() if r.public} == PUBLIC_ROUTES

    auth = template["Resources"]["PaymentsApi"]["Properties"]["Auth"]
    authorizer = auth["Authorizers"][auth["DefaultAuthorizer"]]
    assert authorizer["IdentitySource"] == "$request.header.Authorization"
    assert authorizer["JwtConfiguration"] == {
        "issuer": {"Ref": "JwtIssuer"},
        "audience": {"Ref": "JwtAudience"},
    }
    # What API Gateway receives: every other operation requires the JWT authorizer.
    paths = cloudformation["Resources"]["PaymentsApi"]["Properties"]["Body"]["paths"]
    operations = {
        (method.upper(), path): op["security"]
        for path, methods in paths.items()
        for method, op in methods.items()
    }
    assert set(operations) == {(r.method, r.path) for r in routes()}
    for key, security in operations.items():
        expected = "NONE" if key in PUBLIC_ROUTES else auth["DefaultAuthorizer"]
        assert security == [{expected: []}], key


def test_every_function_has_its_handler_file(template: dict[str, Any]) -> None:
    # `sam build` skips a missing CodeUri without failing: catch it here instead.
    missing = []
    for function in resources_of_type(template, "AWS::Serverless::Function").values():
        props = function["Properties"]
        module = props["Handler"].rsplit(".", 1)[0]
        path = ROOT / props["CodeUri"] / f"{module}.py"
        if not path.is_file():
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"handlers missing: {missing}"


def test_reconciler_runs_every_five_minutes_without_a_route(template: dict[str, Any]) -> None:
    props = template["Resources"]["ReconcilePaymentsFunction"]["Properties"]
    assert props["Timeout"] == 300
    assert [(e["Type"], e["Properties"]["Schedule"]) for e in props["Events"].values()] == [
        ("Schedule", "rate(5 minutes)")
    ]


def test_payments_table_keys_index_and_protection(template: dict[str, Any]) -> None:
    table = template["Resources"]["PaymentsTable"]
    definition = table_definition()
    assert definition["BillingMode"] == "PAY_PER_REQUEST"
    assert {a["AttributeName"]: a["AttributeType"] for a in definition["AttributeDefinitions"]} == {
        "pk": "S",
        "sk": "S",
        "gsi1pk": "S",
        "gsi1sk": "S",
    }
    assert definition["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert definition["GlobalSecondaryIndexes"] == [
        {
            "IndexName": "GSI1",
            "KeySchema": [
                {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ]
    assert ttl_attribute() == "expires_at"
    props = table["Properties"]
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"


def test_each_function_gets_exactly_its_permissions(cloudformation: dict[str, Any]) -> None:
    own_policies = set(resources_of_type(cloudformation, "AWS::IAM::ManagedPolicy"))
    for function_id, expected in EXPECTED_POLICIES.items():
        role = cloudformation["Resources"][f"{function_id}Role"]["Properties"]
        attached = {arn["Ref"] for arn in role["ManagedPolicyArns"] if isinstance(arn, dict)}
        aws_managed = {arn for arn in role["ManagedPolicyArns"] if isinstance(arn, str)}
        assert attached == expected, function_id
        assert attached <= own_policies, function_id
        assert aws_managed == {
            "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
        }, function_id
        assert not role.get("Policies"), f"{function_id} has inline policies"


def test_no_statement_allows_a_table_scan(cloudformation: dict[str, Any]) -> None:
    for owner, statement in allow_statements(cloudformation):
        for action in as_list(statement["Action"]):
            assert not fnmatchcase("dynamodb:scan", action.lower()), f"{owner}: {action}"


def test_no_statement_allows_every_resource(cloudformation: dict[str, Any]) -> None:
    for owner, statement in allow_statements(cloudformation):
        assert "*" not in as_list(statement["Resource"]), owner


def test_secrets_access_is_scoped_to_the_clinic_secrets_prefix(
    cloudformation: dict[str, Any],
) -> None:
    secret_statements = [
        (owner, statement)
        for owner, statement in allow_statements(cloudformation)
        if any(a.startswith("secretsmanager:") for a in as_list(statement["Action"]))
    ]
    assert {owner for owner, _ in secret_statements} == {
        "ClinicStripeSecretsReadPolicy",
        "ClinicStripeSecretsWritePolicy",
        "PayLinkSigningKeyReadPolicy",
    }
    by_owner = dict(secret_statements)
    for owner in ("ClinicStripeSecretsReadPolicy", "ClinicStripeSecretsWritePolicy"):
        assert as_list(by_owner[owner]["Resource"]) == [{"Fn::Sub": SECRETS_PREFIX_ARN}], owner
    read = by_owner["ClinicStripeSecretsReadPolicy"]
    assert as_list(read["Action"]) == ["secretsmanager:GetSecretValue"]
    # The signing key: one secret beside the clinic prefix (not under it), read only.
    signing = by_owner["PayLinkSigningKeyReadPolicy"]
    assert as_list(signing["Action"]) == ["secretsmanager:GetSecretValue"]
    assert as_list(signing["Resource"]) == [
        {"Fn::Sub": SECRETS_PREFIX_ARN.replace("/*", "-pay-link-signing-key-??????")}
    ]


def test_email_is_sent_only_from_the_receipts_address(
    template: dict[str, Any], cloudformation: dict[str, Any]
) -> None:
    globals_ = template["Globals"]["Function"]["Environment"]["Variables"]
    assert globals_["RECEIPTS_FROM_ADDRESS"] == {"Ref": "ReceiptsFromAddress"}
    ses = [
        (owner, statement)
        for owner, statement in allow_statements(cloudformation)
        if any(a.startswith("ses:") for a in as_list(statement["Action"]))
    ]
    assert [owner for owner, _ in ses] == ["ReceiptsEmailSendPolicy"]
    [(_, statement)] = ses
    assert sorted(as_list(statement["Action"])) == ["ses:SendEmail", "ses:SendRawEmail"]
    assert statement["Condition"] == {
        "StringEquals": {"ses:FromAddress": {"Ref": "ReceiptsFromAddress"}}
    }
    for resource in as_list(statement["Resource"]):
        assert ":identity/" in str(resource), resource


def test_pay_link_settings_reach_only_the_pay_link_function(template: dict[str, Any]) -> None:
    for logical_id, function in resources_of_type(template, "AWS::Serverless::Function").items():
        variables = (function["Properties"].get("Environment") or {}).get("Variables", {})
        if logical_id == "PayLinkFunction":
            assert variables == {
                "PAY_LINK_BASE_URL": {"Ref": "PayLinkBaseUrl"},
                "PAY_LINK_SIGNING_KEY_NAME": {
                    "Fn::Sub": "${ClinicSecretsPrefix}-pay-link-signing-key"
                },
            }
        else:
            assert "PAY_LINK_SIGNING_KEY_NAME" not in variables, logical_id


def test_table_access_is_scoped_to_the_payments_table(cloudformation: dict[str, Any]) -> None:
    table_arn = {"Fn::GetAtt": ["PaymentsTable", "Arn"]}
    index_arn = {"Fn::Sub": "${PaymentsTable.Arn}/index/GSI1"}
    for owner, statement in allow_statements(cloudformation):
        if any(a.startswith("dynamodb:") for a in as_list(statement["Action"])):
            assert all(r in (table_arn, index_arn) for r in as_list(statement["Resource"])), owner


def test_every_function_logs_to_a_group_with_retention(template: dict[str, Any]) -> None:
    log_groups = {
        props["LogGroupName"]["Fn::Sub"]: props["RetentionInDays"]
        for props in (
            g["Properties"] for g in resources_of_type(template, "AWS::Logs::LogGroup").values()
        )
    }
    for function_id in resources_of_type(template, "AWS::Serverless::Function"):
        assert log_groups.get(f"/aws/lambda/${{{function_id}}}") == {"Ref": "LogRetentionDays"}


def test_outputs_give_the_api_table_webhook_and_layer(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert set(outputs) == {"ApiUrl", "PaymentsTableName", "WebhookUrlTemplate", "SharedLayerArn"}
    assert outputs["ApiUrl"]["Value"] == {"Fn::GetAtt": ["PaymentsApi", "ApiEndpoint"]}
    webhook = next(r for r in routes() if r.function == "StripeWebhookFunction")
    assert outputs["WebhookUrlTemplate"]["Value"] == {
        "Fn::Sub": "${PaymentsApi.ApiEndpoint}" + webhook.path
    }
    assert outputs["SharedLayerArn"]["Value"] == {"Ref": "SharedLayer"}


def test_handlers_are_importable_as_functions_name_app() -> None:
    # How the local gateway and the tests import a route's handler (local/template.py).
    for route in routes():
        assert re.fullmatch(r"functions\.[a-z_]+\.app", route.module), route.module
