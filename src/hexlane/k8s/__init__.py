"""The one Kubernetes client layer: informers, status writers, leases, client rate limiting."""
