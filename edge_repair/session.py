"""The patient as the user sees it: the base model with every active edit of this home applied."""

from edge_repair.loading import Patient, load_patient
from edge_repair.paths import home_dir


def open_patient(model: str | None = None) -> Patient:
    home_dir()  # fail early, with one line, on an unusable home
    patient = load_patient(model)
    from edge_repair.edits.store import apply_active_edits

    apply_active_edits(patient)
    return patient
