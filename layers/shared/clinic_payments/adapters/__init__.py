"""Adapters: DynamoDB, Stripe, Secrets Manager. Built only by clinic_payments.wiring."""
