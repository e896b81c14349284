"""Benchmarks for SmartLinks Autopilot (run as scripts, e.g. ``python -m bench.regret``)."""
