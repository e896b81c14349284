"""Governance: the one gateway every action passes through, decision records and runtime controls."""
