"""The payments table on DynamoDB, one module per aggregate over one table helper.

`table` talks to DynamoDB and translates its refusals; `summary` keeps a patient's account
summary in step with the transactions that move money. Each aggregate's adapter implements its
port of `domain.ports` (clinic configuration, invoices, payments, credit ledger, customers and
card consents, webhook events, idempotency, the outbox), and `adapters.dynamo_repository`
composes them into the one repository the services use. A transaction that moves money across
aggregates (a settlement: the payment, its invoices, the credit, the event's mark, the request's
answer) is built from each aggregate's transaction items and sent as one.
"""
