"""Authentication (users, sessions, API tokens) and authorisation decided by the `authz` policy."""
