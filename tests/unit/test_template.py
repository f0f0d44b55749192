"""template.yaml is what gets deployed: check its promises, before and after the SAM transform."""

from __future__ import annotations

import ast
import re
import tomllib
from fnmatch import fnmatchcase
from typing import Any

import pytest
from clinic_payments.api import observability

from local.run import handler_env
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
    "refund_id",
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
    # Reads the table only (a Scan: the one in the stack); never Stripe, never a secret.
    "DailyAuditFunction": {"PaymentsTableAuditPolicy"},
}
PAY_LINK_ROUTES = {"GET /v1/pay/{token}", "POST /v1/pay/{token}/payments"}
WEBHOOK_ROUTE = "POST /v1/webhooks/stripe/{clinic_id}/{account_id}"
ALARM_TOPIC = {"Ref": "AlarmTopic"}


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
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    makefile = (ROOT / "layers/shared/Makefile").read_text(encoding="utf-8")
    assert re.search(r"^build-SharedLayer:", makefile, re.MULTILINE)
    # requirements.txt is installed as locked: nothing resolved again at build time.
    assert "--no-deps" in makefile
    assert "-r requirements.txt" in makefile


def test_the_layer_never_ships_the_runtimes_botocore() -> None:
    # aws-xray-sdk (for the tracer) depends on botocore: a copy in the layer would shadow the
    # runtime's and stop matching the runtime's boto3.
    pinned = {
        line.split("==")[0].strip().lower()
        for line in (ROOT / "layers/shared/requirements.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }
    assert {"aws-lambda-powertools", "aws-xray-sdk", "wrapt"} <= pinned
    assert not pinned & {"boto3", "botocore", "s3transfer", "aiohttp"}


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


def test_reconciler_runs_every_five_minutes_one_run_at_a_time(template: dict[str, Any]) -> None:
    props = template["Resources"]["ReconcilePaymentsFunction"]["Properties"]
    assert [(e["Type"], e["Properties"]["Schedule"]) for e in props["Events"].values()] == [
        ("Schedule", "rate(5 minutes)")
    ]
    # Over before the next tick, never two at once; a throttled tick is dropped, not queued.
    assert props["Timeout"] < 5 * 60
    assert props["ReservedConcurrentExecutions"] == 1
    assert props["EventInvokeConfig"] == {
        "MaximumRetryAttempts": 0,
        "MaximumEventAgeInSeconds": 60,
    }


def test_daily_audit_runs_once_a_day_within_lambdas_limit(template: dict[str, Any]) -> None:
    props = template["Resources"]["DailyAuditFunction"]["Properties"]
    [event] = props["Events"].values()
    assert event["Type"] == "Schedule"
    minute, hour, day, month, weekday, year = (
        event["Properties"]["Schedule"].removeprefix("cron(").removesuffix(")").split()
    )
    assert minute.isdigit(), "one fixed time of day"
    assert hour.isdigit(), "one fixed time of day"
    assert (day, month, weekday, year) == ("*", "*", "?", "*")
    assert props["Timeout"] <= 900
    assert props["EventInvokeConfig"] == {"MaximumRetryAttempts": 0}


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


def test_only_the_daily_audit_may_scan_the_table(cloudformation: dict[str, Any]) -> None:
    scanners = {
        owner
        for owner, statement in allow_statements(cloudformation)
        for action in as_list(statement["Action"])
        if fnmatchcase("dynamodb:scan", action.lower())
    }
    assert scanners == {"PaymentsTableAuditPolicy"}
    holders = {
        f for f, policies in EXPECTED_POLICIES.items() if "PaymentsTableAuditPolicy" in policies
    }
    assert holders == {"DailyAuditFunction"}


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
    assert set(outputs) == {
        "ApiUrl",
        "PaymentsTableName",
        "WebhookUrlTemplate",
        "SharedLayerArn",
        "AlarmTopicArn",
    }
    assert outputs["AlarmTopicArn"]["Value"] == ALARM_TOPIC
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


# -- operations: throttling, tracing, metrics, alarms ------------------------------------------


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        k: v["Properties"] for k, v in resources_of_type(template, "AWS::CloudWatch::Alarm").items()
    }


def dimensions(alarm: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}


def parameter_default(template: dict[str, Any], value: Any) -> float:
    return float(template["Parameters"][value["Ref"]]["Default"])


def test_api_routes_are_throttled_and_public_ones_tighter(template: dict[str, Any]) -> None:
    props = template["Resources"]["PaymentsApi"]["Properties"]
    default = props["DefaultRouteSettings"]
    assert set(default) == {"ThrottlingRateLimit", "ThrottlingBurstLimit"}
    assert set(props["RouteSettings"]) == PAY_LINK_ROUTES | {WEBHOOK_ROUTE}
    # Each key names a route of the template, exactly as API Gateway spells route keys.
    assert set(props["RouteSettings"]) <= {f"{r.method} {r.path}" for r in routes()}
    for route_key, settings in props["RouteSettings"].items():
        for limit in ("ThrottlingRateLimit", "ThrottlingBurstLimit"):
            assert "Ref" in settings[limit], route_key
            assert (
                0
                < parameter_default(template, settings[limit])
                < parameter_default(template, default[limit])
            ), (route_key, limit)
    pay_links = [props["RouteSettings"][key] for key in sorted(PAY_LINK_ROUTES)]
    assert pay_links[0] == pay_links[1]


def test_every_alarm_notifies_the_alarm_topic(template: dict[str, Any]) -> None:
    found = alarms(template)
    assert found
    for logical_id, alarm in found.items():
        assert alarm["AlarmActions"] == [ALARM_TOPIC], logical_id
        assert alarm["OKActions"] == [ALARM_TOPIC], logical_id
        assert "docs/deploy.md#alarms" in alarm["AlarmDescription"], logical_id
        # What CloudWatch accepts: 1 day of periods under an hour, 7 days of longer ones.
        window = alarm["Period"] * alarm["EvaluationPeriods"]
        assert window <= (86_400 if alarm["Period"] < 3600 else 604_800), logical_id
        assert alarm.get("DatapointsToAlarm", 1) <= alarm["EvaluationPeriods"], logical_id
    topic = template["Resources"]["AlarmTopic"]
    assert topic["Type"] == "AWS::SNS::Topic"
    subscription = template["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"] == {
        "TopicArn": ALARM_TOPIC,
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
    }
    # No address, no subscription: the parameter is optional.
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    assert template["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }


def test_every_function_has_an_errors_and_a_throttles_alarm(template: dict[str, Any]) -> None:
    watched = {
        (alarm["MetricName"], dimensions(alarm)["FunctionName"]["Ref"])
        for alarm in alarms(template).values()
        if alarm.get("Namespace") == "AWS/Lambda" and alarm["MetricName"] != "Invocations"
    }
    functions = set(resources_of_type(template, "AWS::Serverless::Function"))
    assert watched == {(m, f) for m in ("Errors", "Throttles") for f in functions}


def test_api_5xx_alarm_watches_the_api(template: dict[str, Any]) -> None:
    [alarm] = [a for a in alarms(template).values() if a.get("Namespace") == "AWS/ApiGateway"]
    assert alarm["MetricName"] == "5xx"
    assert dimensions(alarm) == {"ApiId": {"Ref": "PaymentsApi"}, "Stage": "$default"}
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["Threshold"] == 1


def custom_alarm(template: dict[str, Any], metric: str, outcome: str | None) -> dict[str, Any]:
    """The alarm on a metric of ours, whose dimensions are exactly what Powertools writes."""
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    expected = {"service": variables["POWERTOOLS_SERVICE_NAME"]}
    if outcome is not None:
        expected[observability.OUTCOME] = outcome
    [alarm] = [
        a
        for a in alarms(template).values()
        if a.get("MetricName") == metric and dimensions(a).get(observability.OUTCOME) == outcome
    ]
    assert alarm["Namespace"] == variables["POWERTOOLS_METRICS_NAMESPACE"]
    assert dimensions(alarm) == expected
    return alarm


def test_webhook_failures_and_unreadable_events_alarm(template: dict[str, Any]) -> None:
    for outcome in ("failed", "unexpected_shape"):
        alarm = custom_alarm(template, observability.WEBHOOK_EVENTS_METRIC, outcome)
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["Threshold"] == 1
        assert alarm["TreatMissingData"] == "notBreaching"


def test_reconciler_errors_and_a_missed_run_alarm(template: dict[str, Any]) -> None:
    errors = custom_alarm(template, observability.RECONCILED_PAYMENTS_METRIC, "error")
    assert errors["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    [missed] = [a for a in alarms(template).values() if a["MetricName"] == "Invocations"]
    assert dimensions(missed) == {"FunctionName": {"Ref": "ReconcilePaymentsFunction"}}
    assert (missed["Statistic"], missed["ComparisonOperator"], missed["Threshold"]) == (
        "Sum",
        "LessThanThreshold",
        1,
    )
    # No run, no datapoint: missing data is the failure.
    assert missed["TreatMissingData"] == "breaching"
    # Longer than the schedule's 5 minutes, so one slow tick does not fire it.
    assert missed["Period"] * missed["EvaluationPeriods"] > 5 * 60


def test_audit_differences_and_a_missed_audit_alarm(template: dict[str, Any]) -> None:
    differences = custom_alarm(template, observability.AUDIT_DIFFERENCES_METRIC, None)
    assert (differences["Statistic"], differences["ComparisonOperator"]) == (
        "Maximum",
        "GreaterThanOrEqualToThreshold",
    )
    assert differences["Threshold"] == 1
    missed = custom_alarm(template, observability.AUDIT_RUNS_METRIC, "complete")
    assert (missed["ComparisonOperator"], missed["TreatMissingData"]) == (
        "LessThanThreshold",
        "breaching",
    )
    # Every period of the window must lack a completed run, and the window is over a day.
    assert missed["DatapointsToAlarm"] == missed["EvaluationPeriods"]
    assert missed["Period"] * missed["EvaluationPeriods"] > 86_400


def handler_decorators(path: str) -> list[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    [handler] = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "lambda_handler"
    ]
    return [ast.unparse(decorator) for decorator in handler.decorator_list]


def test_every_handler_is_traced_and_counts_its_cold_starts(template: dict[str, Any]) -> None:
    for logical_id, function in resources_of_type(template, "AWS::Serverless::Function").items():
        props = function["Properties"]
        module = props["Handler"].rsplit(".", 1)[0]
        decorators = handler_decorators(f"{props['CodeUri']}{module}.py")
        assert len(decorators) == 3, logical_id
        assert decorators[0].startswith("logger.inject_lambda_context("), logical_id
        assert "clear_state=True" in decorators[0], logical_id
        assert "log_event=False" in decorators[0], logical_id
        assert decorators[1:] == [
            "tracer.capture_lambda_handler(capture_response=False)",
            "metrics.log_metrics(capture_cold_start_metric=True)",
        ], logical_id


def test_tracing_is_on_in_aws_and_off_locally(template: dict[str, Any]) -> None:
    assert template["Globals"]["Function"]["Tracing"] == "Active"
    for logical_id, function in resources_of_type(template, "AWS::Serverless::Function").items():
        variables = (function["Properties"].get("Environment") or {}).get("Variables", {})
        assert "POWERTOOLS_TRACE_DISABLED" not in variables, logical_id
    assert (
        "POWERTOOLS_TRACE_DISABLED"
        not in template["Globals"]["Function"]["Environment"]["Variables"]
    )
    assert handler_env("http://127.0.0.1:1", None)["POWERTOOLS_TRACE_DISABLED"] == "true"
    # The AWS SDK (DynamoDB) and stripe-python's HTTP client are traced below each handler.
    assert set(observability.TRACED_MODULES) == {"botocore", "requests"}


def test_samconfig_overrides_name_template_parameters_with_allowed_values(
    template: dict[str, Any],
) -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    for env in ("dev", "prod"):
        overrides = config[env]["deploy"]["parameters"]["parameter_overrides"]
        values = dict(item.split("=", 1) for item in overrides)
        assert "AlarmEmail" in values, env
        for name, value in values.items():
            parameter = template["Parameters"][name]
            if "AllowedPattern" in parameter:
                assert re.fullmatch(parameter["AllowedPattern"], value), (env, name)
            if "AllowedValues" in parameter:
                assert value in parameter["AllowedValues"], (env, name)
