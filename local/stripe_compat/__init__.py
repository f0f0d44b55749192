"""localstripe behind a small compatibility layer that adds what real Stripe does and it lacks.

Test infrastructure only: never shipped in the Lambda layer. localstripe (GPL) is imported and
called, never copied.

- `patches`: localstripe's resources made to follow Stripe's documented PaymentIntent,
  SetupIntent and card-decline semantics (extra create/confirm parameters, confirm with a
  payment method, `setup_future_usage`, `off_session`), and its state kept in memory only.
- `cards`: Stripe's test-card decline codes and its `card_error` shape.
- `wallets`: `card.wallet` on card PaymentMethods, and `card[token]` with the tokens Apple Pay
  and Google Pay give (made by the `/_compat/wallet_tokens` control).
- `bank_accounts` and `debits`: Stripe's bank debits (ACH, Bacs, SEPA, BECS): their
  PaymentMethods, mandates, `processing` payments that settle "later", test numbers.
- `idempotency`: `Idempotency-Key` replay as Stripe does it.
- `controls`: request counts, fault injection, wallet tokens and when pending debits settle,
  under `/_compat/` (for tests).
- `middleware`: the HTTP edge (controls, faults, idempotency, publishable-key confirms).
- `server`: builds the app and serves it on 127.0.0.1 (`python -m local.stripe_compat --port N`).
- `process`: `start_stripe()` runs that server as a subprocess for tests and the local stack.

This package's `__init__` imports nothing heavy, so `local.stripe_compat.process` can be used
without importing localstripe or aiohttp.
"""
