"""Domain objects <-> DynamoDB items (plain Python values; the serializer adds the types)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar, cast

from pydantic import TypeAdapter

from clinic_payments.domain.credit.lots import LEGACY_LOT, oldest_first
from clinic_payments.domain.model import (
    AccountStatus,
    Actor,
    Allocation,
    BillTo,
    CardConsent,
    CardSetup,
    CardSummary,
    ClinicProfile,
    ClinicSettings,
    Consent,
    Credit,
    CreditLot,
    Dispute,
    Failure,
    FeeRate,
    Invoice,
    InvoiceLine,
    InvoicePaymentRef,
    InvoiceStatus,
    LedgerEntry,
    LedgerEntryType,
    Location,
    LotTake,
    Payer,
    Payment,
    PaymentMethodType,
    PaymentPurpose,
    PaymentStatus,
    RefundRecord,
    StripeAccount,
    TaxRate,
)
from clinic_payments.domain.payments.states import awaits_outcome

Item = dict[str, Any]


def patient_pk(clinic_id: str, patient_id: str) -> str:
    return f"CLINIC#{clinic_id}#PATIENT#{patient_id}"


def clinic_pk(clinic_id: str) -> str:
    return f"CLINIC#{clinic_id}"


_R = TypeVar("_R")


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(kind: type[_R]) -> TypeAdapter[_R]:
    """Built on first use (not at import: cold start), once per record type."""
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    return cast(TypeAdapter[_R], adapter)


def _record_to(record: object) -> Item:
    """A record stored as it is: each field under its own name (enums as their values)."""
    dumped: Item = _adapter(type(record)).dump_python(record, mode="json")
    return dumped


def _record_from(kind: type[_R], item: Item) -> _R:
    """A record read back as it was stored (DynamoDB's Decimals become the fields' ints)."""
    return _adapter(kind).validate_python(item)


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def actor_to(actor: Actor) -> Item:
    return _record_to(actor)


def actor_from(item: Item) -> Actor:
    return _record_from(Actor, item)


def allocations_to(allocations: list[Allocation]) -> list[Item]:
    out: list[Item] = []
    for a in allocations:
        item: Item = {"invoice_id": a.invoice_id, "amount": a.amount}
        if a.invoice_number is not None:
            item["invoice_number"] = a.invoice_number
        out.append(item)
    return out


def card_to(card: CardSummary | None) -> Item | None:
    return _record_to(card) if card is not None else None


def card_from(item: Item | None) -> CardSummary | None:
    return _record_from(CardSummary, item) if item else None


def failure_to(failure: Failure | None) -> Item | None:
    return _record_to(failure) if failure is not None else None


def failure_from(item: Item | None) -> Failure | None:
    return _record_from(Failure, item) if item else None


def refund_to(r: RefundRecord) -> Item:
    return {
        "id": r.id,
        "key": r.key,
        "amount": r.amount,
        "from_credit": r.from_credit,
        "from_invoices": [
            {"invoice_id": a.invoice_id, "amount": a.amount} for a in r.from_invoices
        ],
        "from_fee": r.from_fee,
        "reason": r.reason,
        "at": r.at,
        "actor": actor_to(r.actor),
        "stripe_refund_id": r.stripe_refund_id,
        "status": r.status,
        "failure_reason": r.failure_reason,
        "failed_at": r.failed_at,
        "returned_to_invoices": [
            {"invoice_id": a.invoice_id, "amount": a.amount} for a in r.returned_to_invoices
        ],
        "returned_to_credit": r.returned_to_credit,
        "from_lots": [{"lot_id": t.lot_id, "amount": t.amount, "at": t.at} for t in r.from_lots],
    }


def refund_from(item: Item) -> RefundRecord:
    return RefundRecord(
        id=str(item["id"]),
        key=str(item["key"]),
        amount=_int(item["amount"]),
        from_credit=_int(item.get("from_credit")),
        from_invoices=[
            Allocation(str(a["invoice_id"]), _int(a["amount"]))
            for a in item.get("from_invoices", [])
        ],
        from_fee=_int(item.get("from_fee")),
        reason=str(item.get("reason") or ""),
        at=str(item["at"]),
        actor=actor_from(item["actor"]),
        stripe_refund_id=item.get("stripe_refund_id"),
        # Refunds recorded before statuses were kept had all succeeded.
        status=str(item.get("status") or "succeeded"),
        failure_reason=item.get("failure_reason"),
        failed_at=item.get("failed_at"),
        returned_to_invoices=[
            Allocation(str(a["invoice_id"]), _int(a["amount"]))
            for a in item.get("returned_to_invoices") or []
        ],
        returned_to_credit=_int(item.get("returned_to_credit")),
        from_lots=[
            LotTake(str(t["lot_id"]), _int(t["amount"]), str(t.get("at") or ""))
            for t in item.get("from_lots") or []
        ],
    )


def dispute_to(d: Dispute | None) -> Item | None:
    return _record_to(d) if d is not None else None


def dispute_from(item: Item | None) -> Dispute | None:
    return _record_from(Dispute, item) if item else None


def ref_to(ref: InvoicePaymentRef) -> Item:
    return _record_to(ref)


def invoice_to_item(inv: Invoice) -> Item:
    item: Item = {
        "pk": patient_pk(inv.clinic_id, inv.patient_id),
        "sk": f"INVOICE#{inv.id}",
        "type": "invoice",
        "id": inv.id,
        "number": inv.number,
        "clinic_id": inv.clinic_id,
        "patient_id": inv.patient_id,
        "status": inv.status.value,
        "currency": inv.currency,
        "lines": [
            {
                "id": line.id,
                "description": line.description,
                "service_date": line.service_date,
                "quantity": line.quantity,
                "unit_amount": line.unit_amount,
                "amount": line.amount,
                "tax_rate_id": line.tax_rate_id,
                "tax_amount": line.tax_amount,
            }
            for line in inv.lines
        ],
        "subtotal": inv.subtotal,
        "tax": inv.tax,
        "total": inv.total,
        "amount_paid": inv.amount_paid,
        "due_date": inv.due_date,
        "memo": inv.memo,
        "created_at": inv.created_at,
        "created_by": actor_to(inv.created_by),
        "paid_at": inv.paid_at,
        "voided_at": inv.voided_at,
        "payments": [ref_to(p) for p in inv.payments],
        "amount_at_risk": inv.amount_at_risk,
        "bill_to": _record_to(inv.bill_to) if inv.bill_to else None,
    }
    if inv.is_payable:
        item["gsi1pk"], item["gsi1sk"] = open_invoice_index(inv.clinic_id, inv.id, inv.due_date)
    return item


def open_invoice_index(clinic_id: str, invoice_id: str, due_date: str | None) -> tuple[str, str]:
    """Sparse index of open invoices by due date, clinic-wide (never used to decide money)."""
    return f"CLINIC#{clinic_id}#OPEN_INVOICES", f"{due_date or '9999-12-31'}#{invoice_id}"


def invoice_from(item: Item) -> Invoice:
    return Invoice(
        id=str(item["id"]),
        number=str(item["number"]),
        clinic_id=str(item["clinic_id"]),
        patient_id=str(item["patient_id"]),
        status=InvoiceStatus(item["status"]),
        currency=str(item["currency"]),
        lines=[
            InvoiceLine(
                id=str(line["id"]),
                description=str(line["description"]),
                service_date=line.get("service_date"),
                quantity=_int(line["quantity"]),
                unit_amount=_int(line["unit_amount"]),
                amount=_int(line["amount"]),
                tax_rate_id=line.get("tax_rate_id"),
                tax_amount=_int(line.get("tax_amount")),
            )
            for line in item.get("lines", [])
        ],
        subtotal=_int(item["subtotal"]),
        tax=_int(item["tax"]),
        total=_int(item["total"]),
        amount_paid=_int(item["amount_paid"]),
        due_date=item.get("due_date"),
        memo=item.get("memo"),
        created_at=str(item["created_at"]),
        created_by=actor_from(item["created_by"]),
        paid_at=item.get("paid_at"),
        voided_at=item.get("voided_at"),
        payments=[_record_from(InvoicePaymentRef, p) for p in item.get("payments", [])],
        amount_at_risk=_int(item.get("amount_at_risk")),
        bill_to=_record_from(BillTo, item["bill_to"]) if item.get("bill_to") else None,
    )


PENDING_PK = "PAYMENTS#PENDING"


def payment_to_item(p: Payment) -> Item:
    item: Item = {
        "pk": patient_pk(p.clinic_id, p.patient_id),
        "sk": f"PAYMENT#{p.id}",
        "type": "payment",
        "id": p.id,
        "clinic_id": p.clinic_id,
        "patient_id": p.patient_id,
        "status": p.status.value,
        "method": p.method.value,
        "purpose": p.purpose.value,
        "amount": p.amount,
        "fee_amount": p.fee_amount,
        "currency": p.currency,
        "allocations": allocations_to(p.allocations),
        "credit_amount": p.credit_amount,
        "created_by": actor_to(p.created_by),
        "created_at": p.created_at,
        "payer": p.payer.value,
        "reference": p.reference,
        "note": p.note,
        "receipt_email": p.receipt_email,
        "location_id": p.location_id,
        "save_card": p.save_card,
        "consent": consent_to(p.consent) if p.consent else None,
        "off_session": p.off_session,
        "stripe_account_id": p.stripe_account_id,
        "stripe_customer_id": p.stripe_customer_id,
        "stripe_payment_intent_id": p.stripe_payment_intent_id,
        "client_secret": p.client_secret,
        "payment_method": card_to(p.payment_method),
        "failure": failure_to(p.failure),
        "confirmation_number": p.confirmation_number,
        "succeeded_at": p.succeeded_at,
        "amount_received": p.amount_received,
        "refunds": [refund_to(r) for r in p.refunds],
        "refund_keys": [r.key for r in p.refunds],
        "dispute": dispute_to(p.dispute),
        "credit_balance_after": p.credit_balance_after,
    }
    if awaits_outcome(p):
        item["gsi1pk"] = PENDING_PK
        item["gsi1sk"] = pending_sort_key(p)
    return item


def pending_sort_key(p: Payment) -> str:
    return f"{p.created_at}#{p.clinic_id}#{p.patient_id}#{p.id}"


def payment_from(item: Item) -> Payment:
    consent = item.get("consent")
    return Payment(
        id=str(item["id"]),
        clinic_id=str(item["clinic_id"]),
        patient_id=str(item["patient_id"]),
        status=PaymentStatus(item["status"]),
        method=PaymentMethodType(item["method"]),
        purpose=PaymentPurpose(item["purpose"]),
        amount=_int(item["amount"]),
        fee_amount=_int(item.get("fee_amount")),
        currency=str(item["currency"]),
        allocations=[
            Allocation(str(a["invoice_id"]), _int(a["amount"]), a.get("invoice_number"))
            for a in item.get("allocations", [])
        ],
        credit_amount=_int(item.get("credit_amount")),
        created_by=actor_from(item["created_by"]),
        created_at=str(item["created_at"]),
        payer=Payer(item.get("payer") or "self"),
        reference=item.get("reference"),
        note=item.get("note"),
        receipt_email=item.get("receipt_email"),
        location_id=item.get("location_id"),
        save_card=bool(item.get("save_card")),
        consent=consent_from(consent) if consent else None,
        off_session=bool(item.get("off_session")),
        stripe_account_id=item.get("stripe_account_id"),
        stripe_customer_id=item.get("stripe_customer_id"),
        stripe_payment_intent_id=item.get("stripe_payment_intent_id"),
        client_secret=item.get("client_secret"),
        # The card as the charge.succeeded event described it wins (never overwritten by a
        # settlement that knew only the card's id).
        payment_method=card_from(item.get("card_details") or item.get("payment_method")),
        failure=failure_from(item.get("failure")),
        confirmation_number=item.get("confirmation_number"),
        succeeded_at=item.get("succeeded_at"),
        amount_received=_int(item.get("amount_received")),
        refunds=[refund_from(r) for r in item.get("refunds") or []],
        dispute=dispute_from(item.get("dispute")),
        credit_balance_after=_opt_int(item.get("credit_balance_after")),
    )


def ledger_to_item(clinic_id: str, patient_id: str, e: LedgerEntry) -> Item:
    return {
        "pk": patient_pk(clinic_id, patient_id),
        "sk": ledger_sk(e.id),
        "type": "ledger",
        "id": e.id,
        "entry_type": e.type.value,
        "amount": e.amount,
        "currency": e.currency,
        "at": e.at,
        "actor": actor_to(e.actor),
        "invoice_id": e.invoice_id,
        "payment_id": e.payment_id,
        "location_id": e.location_id,
        "reason": e.reason,
    }


def ledger_sk(entry_id: str) -> str:
    """From the id alone (a retry finds the same key), in time order across kinds: ids are
    a prefix (led_, cra_, adj_) and a ULID, so the ULID leads and the prefix keeps it unique."""
    prefix, _, rest = entry_id.partition("_")
    return f"LEDGER#{rest}#{prefix}" if rest else f"LEDGER#{entry_id}"


def ledger_from(item: Item) -> LedgerEntry:
    return LedgerEntry(
        id=str(item["id"]),
        type=LedgerEntryType(item["entry_type"]),
        amount=_int(item["amount"]),
        currency=str(item["currency"]),
        at=str(item["at"]),
        actor=actor_from(item["actor"]),
        invoice_id=item.get("invoice_id"),
        payment_id=item.get("payment_id"),
        location_id=item.get("location_id"),
        reason=item.get("reason"),
    )


def credit_from(item: Item) -> Credit:
    balance = int(item.get("balance", 0))
    raw_lots = item.get("lots")
    lots: tuple[CreditLot, ...]
    if raw_lots is None:
        # Written before credit was kept in lots: its balance is one lot, the oldest.
        lots = (CreditLot(LEGACY_LOT, balance, ""),) if balance else ()
    else:
        lots = oldest_first(
            tuple(
                CreditLot(str(lot_id), _int(lot["amount"]), str(lot.get("at") or ""))
                for lot_id, lot in raw_lots.items()
            )
        )
    return Credit(balance, str(item["currency"]), int(item.get("version", 0)), lots)


def credit_to_item(clinic_id: str, patient_id: str, credit: Credit) -> Item:
    return {
        "pk": patient_pk(clinic_id, patient_id),
        "sk": f"CREDIT#{credit.currency}",
        "type": "credit",
        "currency": credit.currency,
        "balance": credit.balance,
        "version": credit.version,
        "lots": {lot.id: {"amount": lot.amount, "at": lot.at} for lot in credit.lots},
    }


def settings_to_item(s: ClinicSettings) -> Item:
    return {
        "pk": clinic_pk(s.clinic_id),
        "sk": "SETTINGS",
        "type": "settings",
        "clinic_id": s.clinic_id,
        "clinic_name": s.clinic_name,
        "currency": s.currency,
        "accept_portal_payments": s.accept_portal_payments,
        "allow_credit_topups": s.allow_credit_topups,
        "email_pay_online_requests": s.email_pay_online_requests,
        "pass_processing_fees": s.pass_processing_fees,
        "fee_schedule": {
            method: {"percent": str(rate.percent), "fixed": rate.fixed}
            for method, rate in s.fee_schedule.items()
        },
        "tax_rates": [{"id": t.id, "name": t.name, "percent": str(t.percent)} for t in s.tax_rates],
        "locations": [{"id": loc.id, "name": loc.name} for loc in s.locations],
        "card_on_file_wording_version": s.card_on_file_wording_version,
        "timezone": s.timezone,
        "profile": _record_to(s.profile),
    }


def settings_from(item: Item) -> ClinicSettings:
    return ClinicSettings(
        clinic_id=str(item["clinic_id"]),
        clinic_name=str(item.get("clinic_name") or ""),
        currency=str(item["currency"]),
        accept_portal_payments=bool(item.get("accept_portal_payments")),
        allow_credit_topups=bool(item.get("allow_credit_topups")),
        email_pay_online_requests=bool(item.get("email_pay_online_requests")),
        pass_processing_fees=bool(item.get("pass_processing_fees")),
        fee_schedule={
            method: FeeRate(Decimal(str(rate["percent"])), _int(rate["fixed"]))
            for method, rate in (item.get("fee_schedule") or {}).items()
        },
        tax_rates=[
            TaxRate(str(t["id"]), str(t["name"]), Decimal(str(t["percent"])))
            for t in item.get("tax_rates", [])
        ],
        locations=[Location(str(loc["id"]), str(loc["name"])) for loc in item.get("locations", [])],
        card_on_file_wording_version=str(item.get("card_on_file_wording_version") or "2026-11-01"),
        timezone=str(item.get("timezone") or "UTC"),  # settings saved before time zones
        profile=_record_from(ClinicProfile, item["profile"])
        if item.get("profile")
        else ClinicProfile(),
    )


def account_to_item(a: StripeAccount) -> Item:
    return {
        "pk": clinic_pk(a.clinic_id),
        "sk": f"ACCOUNT#{a.account_id}",
        "type": "stripe_account",
        "clinic_id": a.clinic_id,
        "account_id": a.account_id,
        "name": a.name,
        "status": a.status.value,
        "admin_default": a.admin_default,
        "portal_default": a.portal_default,
        "primary": a.primary,
        "secret_key_last4": a.secret_key_last4,
        "publishable_key_last4": a.publishable_key_last4,
        "webhook_secret_last4": a.webhook_secret_last4,
        "publishable_key": a.publishable_key,
        "updated_at": a.updated_at,
        "updated_by": actor_to(a.updated_by),
    }


def account_from(item: Item) -> StripeAccount:
    return StripeAccount(
        clinic_id=str(item["clinic_id"]),
        account_id=str(item["account_id"]),
        name=str(item["name"]),
        status=AccountStatus(item["status"]),
        admin_default=bool(item.get("admin_default")),
        portal_default=bool(item.get("portal_default")),
        primary=bool(item.get("primary")),
        secret_key_last4=str(item.get("secret_key_last4", "")),
        publishable_key_last4=str(item.get("publishable_key_last4", "")),
        webhook_secret_last4=str(item.get("webhook_secret_last4", "")),
        publishable_key=str(item.get("publishable_key", "")),
        updated_at=str(item.get("updated_at", "")),
        updated_by=actor_from(item["updated_by"]),
    )


def consent_to(consent: Consent) -> Item:
    return _record_to(consent)


def consent_from(item: Item) -> Consent:
    return _record_from(Consent, item)


def card_setup_to_item(setup: CardSetup) -> Item:
    return {
        "pk": patient_pk(setup.clinic_id, setup.patient_id),
        "sk": f"CARD_SETUP#{setup.id}",
        "type": "card_setup",
        "id": setup.id,
        "clinic_id": setup.clinic_id,
        "patient_id": setup.patient_id,
        "account_id": setup.account_id,
        "customer_id": setup.customer_id,
        "consent": consent_to(setup.consent),
        "created_at": setup.created_at,
        "setup_intent_id": setup.setup_intent_id,
        "payment_method_id": setup.payment_method_id,
    }


def card_setup_from(item: Item) -> CardSetup:
    return CardSetup(
        id=str(item["id"]),
        clinic_id=str(item["clinic_id"]),
        patient_id=str(item["patient_id"]),
        account_id=str(item["account_id"]),
        customer_id=str(item["customer_id"]),
        consent=consent_from(item["consent"]),
        created_at=str(item["created_at"]),
        setup_intent_id=item.get("setup_intent_id"),
        payment_method_id=item.get("payment_method_id"),
    )


def card_consent_to_item(clinic_id: str, patient_id: str, c: CardConsent) -> Item:
    return {
        "pk": patient_pk(clinic_id, patient_id),
        "sk": f"CARD#{c.payment_method_id}",
        "type": "card_consent",
        "payment_method_id": c.payment_method_id,
        "account_id": c.account_id,
        "consent": consent_to(c.consent),
        "setup_id": c.setup_id,
        "payment_id": c.payment_id,
    }


def card_consent_from(item: Item) -> CardConsent:
    return CardConsent(
        payment_method_id=str(item["payment_method_id"]),
        account_id=str(item["account_id"]),
        consent=consent_from(item["consent"]),
        setup_id=item.get("setup_id"),
        payment_id=item.get("payment_id"),
    )
