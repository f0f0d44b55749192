"""Money rules: integer minor units, Stripe's currency exponents, tax and fee arithmetic."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

# Stripe takes at most eight digits (99999999) in an amount; so does this API.
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

# The presentment currencies Stripe charges in (docs.stripe.com/currencies): a currency outside
# this set is refused by Stripe ("Invalid currency"), so it is refused where it enters here.
STRIPE_CURRENCIES = frozenset(
    [
        "usd",
        "aed",
        "afn",
        "all",
        "amd",
        "ang",
        "aoa",
        "ars",
        "aud",
        "awg",
        "azn",
        "bam",
        "bbd",
        "bdt",
        "bgn",
        "bhd",
        "bif",
        "bmd",
        "bnd",
        "bob",
        "brl",
        "bsd",
        "bwp",
        "byn",
        "bzd",
        "cad",
        "cdf",
        "chf",
        "clp",
        "cny",
        "cop",
        "crc",
        "cve",
        "czk",
        "djf",
        "dkk",
        "dop",
        "dzd",
        "egp",
        "etb",
        "eur",
        "fjd",
        "fkp",
        "gbp",
        "gel",
        "gip",
        "gmd",
        "gnf",
        "gtq",
        "gyd",
        "hkd",
        "hnl",
        "htg",
        "huf",
        "idr",
        "ils",
        "inr",
        "isk",
        "jmd",
        "jod",
        "jpy",
        "kes",
        "kgs",
        "khr",
        "kmf",
        "krw",
        "kwd",
        "kyd",
        "kzt",
        "lak",
        "lbp",
        "lkr",
        "lrd",
        "lsl",
        "mad",
        "mdl",
        "mga",
        "mkd",
        "mmk",
        "mnt",
        "mop",
        "mur",
        "mvr",
        "mwk",
        "mxn",
        "myr",
        "mzn",
        "nad",
        "ngn",
        "nio",
        "nok",
        "npr",
        "nzd",
        "omr",
        "pab",
        "pen",
        "pgk",
        "php",
        "pkr",
        "pln",
        "pyg",
        "qar",
        "ron",
        "rsd",
        "rub",
        "rwf",
        "sar",
        "sbd",
        "scr",
        "sek",
        "sgd",
        "shp",
        "sle",
        "sos",
        "srd",
        "std",
        "szl",
        "thb",
        "tjs",
        "tnd",
        "top",
        "try",
        "ttd",
        "twd",
        "tzs",
        "uah",
        "ugx",
        "uyu",
        "uzs",
        "vnd",
        "vuv",
        "wst",
        "xaf",
        "xcd",
        "xcg",
        "xof",
        "xpf",
        "yer",
        "zar",
        "zmw",
    ]
)

# Stripe's minimum charge per currency in minor units (docs.stripe.com/currencies, "Minimum and
# maximum charge amounts"): a card charge below it is refused with `amount_too_small`. For a
# currency not listed Stripe converts to the account's settlement currency, which cannot be
# known here: no minimum is checked before calling Stripe, and Stripe's refusal is reported.
MINIMUM_CHARGE: dict[str, int] = {
    "usd": 50,
    "aed": 200,
    "aud": 50,
    "bgn": 100,
    "brl": 50,
    "cad": 50,
    "chf": 50,
    "czk": 1500,
    "dkk": 250,
    "eur": 50,
    "gbp": 30,
    "hkd": 400,
    "huf": 17500,
    "inr": 50,
    "jpy": 50,
    "mxn": 1000,
    "myr": 200,
    "nok": 300,
    "nzd": 50,
    "pln": 200,
    "ron": 200,
    "sek": 300,
    "sgd": 50,
    "thb": 1000,
}


def is_stripe_currency(currency: str) -> bool:
    """Lower-case ISO 4217, and one Stripe charges in."""
    return currency in STRIPE_CURRENCIES


def minimum_charge(currency: str) -> int | None:
    """Stripe's smallest card charge in `currency`, or None where Stripe does not publish one."""
    return MINIMUM_CHARGE.get(currency)


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
