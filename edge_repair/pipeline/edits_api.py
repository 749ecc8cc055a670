"""The one place the pipeline and the chat call the edit store (edge_repair/edits/store.py)."""

from edge_repair.errors import StateError


def _store_function(name: str):
    from edge_repair.edits import store

    function = getattr(store, name, None)
    if function is None:
        raise StateError(f"the edit store has no {name}() yet; this build cannot persist or list edits")
    return function


def record_edit(patient, edit, probes: list[str], scrub: list[str]) -> str:
    """Persist the edit; probe prompts are stored only encrypted, scrub terms leave the retain buffer."""
    return str(_store_function("record_edit")(patient, edit, probes=probes, scrub=scrub))


def list_edits() -> list:
    return list(_store_function("list_edits")())


def undo_edit(edit_id: str):
    return _store_function("undo_edit")(edit_id)


def reapply_edits(patient) -> list[str]:
    """Make the in-memory patient match the store again (after an undo)."""
    return list(_store_function("apply_active_edits")(patient))
