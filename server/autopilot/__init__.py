"""The autopilot: optimisation cycles that propose new allocations and budgets and send them
through the governance gateway; its scheduler (started only from the CLI), its API, status page
and market simulator."""
