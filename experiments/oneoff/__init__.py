"""One-off measurements whose outputs are committed and frozen (README.md here: what each produced and where)."""
