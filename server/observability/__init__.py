"""Production observability: Prometheus metrics (`metrics`), structured logs with a request id
(`logs`), and the Flask side of both (`web`: the `/metrics` endpoint, per-request metrics and
request ids, the count of unhandled exceptions). See docs/operations.md "Monitoring"."""
