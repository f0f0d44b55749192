"""Routers, built by factories: each resolver gets its own, so no router is shared between two
resolvers in one process (a Router delegates to the last resolver that included it)."""
