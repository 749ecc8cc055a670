"""User-facing errors: each becomes one line on stderr and a documented exit code."""


class EdgeRepairError(Exception):
    """A mistake or condition the user can act on (never shown as a traceback)."""

    exit_code = 1


class InputError(EdgeRepairError):
    """Bad command-line input: empty or oversized text, bad option values."""

    exit_code = 2


class ModelError(EdgeRepairError):
    """A model is missing, corrupt or of an unsupported architecture."""

    exit_code = 3


class StateError(EdgeRepairError):
    """The home directory, ledger, adapters or retain buffer cannot be used."""

    exit_code = 4


class EditError(EdgeRepairError):
    """An edit could not be made or verified; the previous state is kept."""

    exit_code = 5
