"""Refunds and disputes: what a refund takes back and gives back (`rules`, pure) and the
service that reserves, records and resolves them (`service`)."""
