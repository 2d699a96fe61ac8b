"""Turning grids into runs: the plan and dry run, preflight checks, locks and executors."""
