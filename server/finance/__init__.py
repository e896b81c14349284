"""The web side of money: the ledger and payouts API, provider webhooks, the finance pages and the
`smartlinks ledger|treasury|payouts` commands. The rules themselves live in `billing/`."""
