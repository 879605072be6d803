"""The embedded Kubernetes-compatible API server on SQLite."""
