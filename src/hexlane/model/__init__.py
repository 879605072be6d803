"""Typed, immutable views of Kubernetes and cilium.io objects.

Parsing, validation and label selectors (pure).
"""
