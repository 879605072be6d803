"""Identities and network policy resolution (pure)."""
