"""Invoices: what an invoice is and may become (rules), and the workflows over them (service)."""
