"""CLI commands of `python -m fsad_core` (one module per command)."""
