"""Policy lifecycle: versions of the Rego bundle (built, checked, tested, signed, stored), the
bundle server the OPA sidecars poll, activation and rollback, impact analysis against recorded
decisions, shadow evaluation, and the sidecars' status reports and decision logs.

`server/policy/` holds the OPA client, the bundle builder and the sidecar supervisor; this package
holds what the server does with policy versions. See docs/policies.md."""
