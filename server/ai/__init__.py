"""The AI supervisor: a model (or, in degraded mode, deterministic rules) watches the autopilot and
proposes what an operator would do; every proposal is validated and decided by the
`ai_supervisor` policy through the governance gateway, and recorded with its cycle."""
