"""Clinic payments: invoices, card payments through each clinic's Stripe account, account credit."""
