"""One module per experiment family: what each script runs (see docs/architecture.md for which)."""
