"""Where edge-repair keeps models (a cache) and user state (private data)."""

import os
from pathlib import Path

import platformdirs

from edge_repair.errors import StateError

APP = "edge-repair"


def models_dir() -> Path:
    """Converted and downloaded models; safe to delete, they are re-created on demand."""
    root = os.environ.get("EDGE_REPAIR_MODELS") or platformdirs.user_cache_dir(APP)
    return _writable(Path(root).expanduser(), "EDGE_REPAIR_MODELS")


def home_dir() -> Path:
    """Edits, adapters, the retain buffer and the ledger; private to the owner."""
    root = os.environ.get("EDGE_REPAIR_HOME") or platformdirs.user_data_dir(APP)
    return _writable(Path(root).expanduser(), "EDGE_REPAIR_HOME", private=True)


def _writable(path: Path, variable: str, private: bool = False) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700 if private else 0o777)
        probe = path / ".write-probe"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise StateError(f"cannot write to {path} ({err.strerror}); set {variable} to a writable directory") from None
    return path
