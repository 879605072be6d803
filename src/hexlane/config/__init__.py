"""The Cilium-Helm-values-compatible configuration: defaults, merging, normalisation (pure)."""
