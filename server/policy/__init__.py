"""Policy tooling: Rego bundle building, the OPA sidecar and the client for its Data API."""
