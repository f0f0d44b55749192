"""localstripe behind a small compatibility layer that adds what real Stripe does and it lacks.

Test infrastructure only: never shipped in the Lambda layer. localstripe (GPL) is imported and
called, never copied.

- `patches`: localstripe's resources made to follow Stripe's documented PaymentIntent,
  SetupIntent and card-decline semantics (extra create/confirm parameters, confirm with a
  payment method, `setup_future_usage`, `off_session`, Stripe's `card_error` shape), and its
  state kept in memory only.
- `http`: the HTTP edge: `Idempotency-Key` replay, publishable-key confirms, request counts and
  fault injection under `/_compat/`.
- `server`: builds the app and serves it on 127.0.0.1 (`python -m local.stripe_compat --port N`).
- `process`: `start_stripe()` runs that server as a subprocess for tests and the local stack.

This package's `__init__` imports nothing heavy, so `local.stripe_compat.process` can be used
without importing localstripe or aiohttp.
"""
