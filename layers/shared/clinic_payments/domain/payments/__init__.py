"""Payments: the states a payment moves through (states), who may pay how (rules), and the
service that records, charges and settles them exactly once (service)."""
