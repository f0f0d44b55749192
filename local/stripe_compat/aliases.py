"""Stripe's test PaymentMethod ids (`pm_card_*`) that localstripe does not know.

In test mode Stripe turns each of these ids into a new PaymentMethod for its test card wherever
a PaymentMethod id is accepted (https://docs.stripe.com/testing, "Test code" and the 3D Secure
and regulatory card tables). localstripe knows three of them (`pm_card_visa`,
`pm_card_visa_chargeDeclined`, `pm_card_chargeCustomerFail`); the same test code runs against
real Stripe and this fake only if both accept the same ids. Only Visa-numbered cards are listed:
localstripe reports every card as a Visa, and a Mastercard that says `visa` would be kinder than
Stripe, not stricter.
"""

from __future__ import annotations

from typing import Any

from localstripe.resources import PaymentMethod

# Stripe's test PaymentMethod id -> the test card number it stands for.
TEST_PAYMENT_METHODS: dict[str, str] = {
    "pm_card_visa_debit": "4000056655665556",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_chargeDeclinedLostCard": "4000000000009987",
    "pm_card_chargeDeclinedStolenCard": "4000000000009979",
    "pm_card_chargeDeclinedExpiredCard": "4000000000000069",
    "pm_card_chargeDeclinedIncorrectCvc": "4000000000000127",
    "pm_card_chargeDeclinedProcessingError": "4000000000000119",
    # Regulatory (SCA) cards: "always authenticate", "authenticate unless set up", and one
    # that declines for insufficient funds after a successful authentication.
    "pm_card_authenticationRequired": "4000002760003184",
    "pm_card_authenticationRequiredOnSetup": "4000002500003155",
    "pm_card_authenticationRequiredChargeDeclinedInsufficientFunds": "4000008260003178",
    # 3D Secure 2 required; required and then declined.
    "pm_card_threeDSecure2Required": "4000000000003220",
    "pm_card_threeDSecureRequiredChargeDeclined": "4000008400001629",
}

_installed = False


def install() -> None:
    """Teach PaymentMethod lookups the ids above, keeping whatever lookup is already there
    (localstripe's own three, or another compat module's) for every other id."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = PaymentMethod._try_get_canonical_test_article

    def lookup(cls: type, id: str) -> Any:
        number = TEST_PAYMENT_METHODS.get(id)
        if number is None:
            return previous(id)
        # A new PaymentMethod each time, as Stripe creates one per use of a test id.
        return PaymentMethod(
            type="card",
            card={"number": number, "exp_month": "12", "exp_year": "2034", "cvc": "123"},
        )

    PaymentMethod._try_get_canonical_test_article = classmethod(lookup)
