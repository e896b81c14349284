"""Compliance reporting: a period's report (decisions, policy changes, kill switches, money,
documents) and streaming CSV exports of the decision records and the ledger, for auditors."""
