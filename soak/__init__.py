"""`make soak`: random money operations with faults through the local stack (soak/runner.py)."""
