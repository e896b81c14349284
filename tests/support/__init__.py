"""Helpers the test suite uses to start real servers (PostgreSQL, OPA) as local processes."""
