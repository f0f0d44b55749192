"""Clinic administration: Stripe keys go to Secrets Manager only; reads show the last four."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from local.aws import client

pytestmark = pytest.mark.integration

ACCOUNTS = "/v1/clinics/{clinic_id}/stripe-accounts"
ACCOUNT = ACCOUNTS + "/{account_id}"
SETTINGS = "/v1/clinics/{clinic_id}/settings"


def test_keys_live_in_secrets_manager_and_reads_show_only_the_last_four(clinic):
    status, listing = clinic.call("GET", ACCOUNTS, role="admin")
    assert status == 200
    [account] = listing["items"]
    assert account["secret_key_last4"] == clinic.secret_key[-4:]
    text = json.dumps(listing)
    assert clinic.secret_key not in text
    assert clinic.webhook_secret not in text
    secret = client("secretsmanager", clinic.stack.moto_url).get_secret_value(
        SecretId=f"clinic-payments-test/{clinic.clinic_id}/stripe/main"
    )
    assert json.loads(secret["SecretString"])["secret_key"] == clinic.secret_key


def test_keys_never_reach_the_table(clinic):
    ddb = client("dynamodb", clinic.stack.moto_url)
    items = ddb.query(
        TableName=clinic.stack.table_name,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"CLINIC#{clinic.clinic_id}"}},
    )["Items"]
    assert items
    assert clinic.secret_key not in json.dumps(items)
    assert clinic.webhook_secret not in json.dumps(items)


def test_one_default_per_kind(clinic):
    status, _ = clinic.call(
        "PUT",
        ACCOUNT,
        {"account_id": "second"},
        role="admin",
        body={
            "name": "Second",
            "secret_key": "sk_test_second_account",
            "publishable_key": "pk_test_second_account",
            "webhook_secret": "whsec_second_account",
            "portal_default": True,
        },
    )
    assert status == 200
    items = {a["account_id"]: a for a in clinic.call("GET", ACCOUNTS, role="admin")[1]["items"]}
    assert items["second"]["portal_default"] is True
    assert items["main"]["portal_default"] is False
    assert items["main"]["admin_default"] is True


@pytest.mark.parametrize(
    "keys",
    [
        {
            "secret_key": "pk_test_wrong_kind",
            "publishable_key": "pk_test_x1234",
            "webhook_secret": "whsec_1234567",
        },
        {
            "secret_key": "sk_live_mixed_1234",
            "publishable_key": "pk_test_x1234",
            "webhook_secret": "whsec_1234567",
        },
        {"secret_key": "sk_test_ok_12345"},
    ],
    ids=["publishable-as-secret", "live-and-test-mixed", "new-account-missing-keys"],
)
def test_bad_keys_are_refused(clinic, keys):
    status, body = clinic.call(
        "PUT", ACCOUNT, {"account_id": "third"}, role="admin", body={"name": "Third", **keys}
    )
    assert (status, body["error"]["code"]) == (422, "validation_error")
    assert "sk_live_mixed_1234" not in json.dumps(body)


def test_settings_round_trip(clinic):
    status, settings = clinic.call("GET", SETTINGS, role="admin")
    assert status == 200
    assert settings["tax_rates"] == [{"id": "tax_hst", "name": "HST", "percent": "13"}]
    assert settings["fee_schedule"]["card"] == {"percent": "2.9", "fixed": 30}
    assert settings["pass_processing_fees"] is False


def test_a_float_tax_percent_is_refused(clinic):
    status, body = clinic.call(
        "PUT",
        SETTINGS,
        role="admin",
        body={"tax_rates": [{"id": "t", "name": "T", "percent": 13.5}]},
    )
    assert status == 422, body


def test_a_clinics_time_zone_is_kept_and_dates_its_receipts(clinic):
    status, settings = clinic.call("GET", SETTINGS, role="admin")
    assert (status, settings["timezone"]) == (200, "UTC")  # a clinic that never set one
    ontario = {**settings, "timezone": "America/Toronto"}
    del ontario["clinic_id"]
    status, body = clinic.call("PUT", SETTINGS, role="admin", body=ontario)
    assert (status, body["timezone"]) == (200, "America/Toronto"), body

    # A later PUT that leaves it out keeps it, as with the fee schedule.
    without = {k: v for k, v in ontario.items() if k != "timezone"}
    status, body = clinic.call("PUT", SETTINGS, role="admin", body=without)
    assert (status, body["timezone"]) == (200, "America/Toronto"), body

    invoice = clinic.create_invoice("pat_a", 5000)
    status, payment = clinic.pay(
        "pat_a",
        {"method": "cash", "allocations": [{"invoice_id": invoice["id"]}]},
        role="staff",
    )
    assert status == 201, payment
    status, receipt = clinic.call(
        "GET",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/payments/{payment_id}/receipt",
        {"patient_id": "pat_a", "payment_id": payment["id"]},
        query={"format": "json"},
    )
    assert status == 200, receipt
    moment = datetime.fromisoformat(payment["succeeded_at"].replace("Z", "+00:00"))
    assert receipt["date_posted"] == (
        moment.astimezone(ZoneInfo("America/Toronto")).date().isoformat()
    )


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "Toronto", "../../etc/passwd", 5])
def test_an_unknown_time_zone_is_refused_and_nothing_changes(clinic, zone):
    status, body = clinic.call("PUT", SETTINGS, role="admin", body={"timezone": zone})
    assert (status, body["error"]["code"]) == (422, "validation_error"), body
    assert any(d["field"].endswith("timezone") for d in body["error"]["details"]), body
    status, settings = clinic.call("GET", SETTINGS, role="admin")
    assert settings["timezone"] == "UTC"
    assert settings["tax_rates"]  # the refused PUT replaced nothing


def test_card_on_file_terms_say_who_may_charge_the_card(clinic):
    status, terms = clinic.call(
        "GET", "/v1/clinics/{clinic_id}/card-on-file-terms", role="patient", patient_ids=("pat_a",)
    )
    assert status == 200
    assert terms["wording_version"] == "2026-11-01"
    assert "staff" in terms["text"]
    assert "represent" in terms["text"]


def test_health_and_openapi_list_every_route(clinic):
    from local.template import routes

    status, health = clinic.call("GET", "/v1/health", authenticated=False)
    assert (status, health) == (200, {"status": "ok"})
    status, schema = clinic.call("GET", "/v1/openapi.json", authenticated=False)
    assert status == 200
    documented = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    for route in routes():
        if route.path in ("/v1/openapi.json", "/v1/docs"):
            continue
        assert (route.method, route.path) in documented, route
    pay = schema["paths"]["/v1/clinics/{clinic_id}/patients/{patient_id}/payments"]["post"]
    assert "requestBody" in pay
