"""Placeholder until the edit ledger lands: no edits are stored yet."""


def apply_active_edits(patient) -> None:
    return None
