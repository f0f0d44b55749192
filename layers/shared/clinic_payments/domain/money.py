"""Money rules: integer minor units, Stripe's currency exponents, tax and fee arithmetic."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

MAX_AMOUNT = 99_999_999

# Stripe's zero-decimal and three-decimal currencies (stripe.com/docs/currencies).
ZERO_DECIMAL_CURRENCIES = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
THREE_DECIMAL_CURRENCIES = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


def minor_unit_exponent(currency: str) -> int:
    currency = currency.lower()
    if currency in ZERO_DECIMAL_CURRENCIES:
        return 0
    if currency in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def is_valid_amount(value: object) -> bool:
    """A positive integer within Stripe's limit. bool is an int in Python, and is refused."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_AMOUNT


def line_tax(amount: int, percent: Decimal) -> int:
    """Tax on one line in minor units, rounded half-up (DESIGN.md: per line, then summed)."""
    if amount < 0 or percent < 0:
        raise ValueError("amount and percent must not be negative")
    return int((Decimal(amount) * percent / Decimal(100)).quantize(Decimal(1), ROUND_HALF_UP))


def gross_up(amount: int, percent: Decimal, fixed: int) -> int:
    """What to charge so the clinic nets `amount` after a fee of percent% + fixed.

    charge = ceil((amount + fixed) / (1 - percent/100)). Ceil, so the clinic never nets less.
    """
    if not 0 <= percent < 100:
        raise ValueError("percent must be in [0, 100)")
    rate = percent / Decimal(100)
    return int(
        ((Decimal(amount) + Decimal(fixed)) / (Decimal(1) - rate)).to_integral_value(ROUND_CEILING)
    )


def fee_for(amount: int, percent: Decimal, fixed: int) -> int:
    """The surcharge that passes the processing fee on: gross_up(amount) - amount."""
    return gross_up(amount, percent, fixed) - amount


def format_amount(amount: int, currency: str) -> str:
    """Minor units as the currency writes them: 135600 usd -> "1,356.00", 1500 jpy -> "1,500"."""
    exponent = minor_unit_exponent(currency)
    sign = "-" if amount < 0 else ""
    units, minor = divmod(abs(amount), 10**exponent)
    text = f"{units:,}"
    if exponent:
        text += f".{minor:0{exponent}d}"
    return sign + text


def format_money(amount: int, currency: str) -> str:
    """An amount with its ISO code, unambiguous whichever dollar it is: "USD 1,356.00"."""
    return f"{currency.upper()} {format_amount(amount, currency)}"
