"""The HTTP edge: request/response models, auth, errors, idempotency, routes."""
