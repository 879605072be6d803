"""Flow observability: flow reader, store, filters, metrics, API, relay and UI."""
