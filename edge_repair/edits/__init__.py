"""Persisted edits: the ledger, adapters in mlx-lm's format, undo and fuse."""
