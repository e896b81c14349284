"""Money: the double-entry ledger, payout providers, the payout engine and the treasury.

Pure ledger rules (`money`, `rules`) import nothing from Flask; the web parts live in
`server/finance/`."""
