"""The ledger: which edits exist, for which base model. Metadata only, never forgotten text."""

import json
import secrets
import time
from pathlib import Path

from edge_repair.errors import InputError, StateError
from edge_repair.storage.atomic import write_json

LEDGER = "ledger.json"
VERSION = 1
TEXT_INFO = {"method"}  # the only string metadata kept; other strings could carry forgotten text
SHARED = "shared"  # kind of the entry holding factors every edit of a base needs (never listed or undone alone)


def empty() -> dict:
    return {"version": VERSION, "bases": {}, "edits": []}


def read_ledger(home: Path) -> dict:
    path = home / LEDGER
    if not path.exists():
        return empty()
    try:
        ledger = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise StateError(f"{path} is damaged ({type(err).__name__}); edits cannot be read") from None
    if not isinstance(ledger, dict) or ledger.get("version") != VERSION or not isinstance(ledger.get("edits"), list):
        raise StateError(f"{path} is not an edge-repair ledger of version {VERSION}")
    return ledger


def write_ledger(home: Path, ledger: dict) -> None:
    write_json(home / LEDGER, ledger)


def new_id(ledger: dict) -> str:
    taken = {e["id"] for e in ledger["edits"]}
    while (edit_id := secrets.token_hex(4)) in taken:
        pass
    return edit_id


def find_edit(ledger: dict, edit_id: str) -> dict:
    """The edit whose id is `edit_id` or starts with it (ids are long enough to type a prefix)."""
    edit_id = (edit_id or "").strip().lower()
    edits = user_edits(ledger)
    matches = [e for e in edits if e["id"] == edit_id] or [e for e in edits if edit_id and e["id"].startswith(edit_id)]
    if not matches:
        raise InputError(f"no edit '{edit_id}'; edge-repair edits list shows the ids")
    if len(matches) > 1:
        raise InputError(f"'{edit_id}' matches {len(matches)} edits; give more of the id")
    return matches[0]


def edits_for(ledger: dict, base: str) -> list[dict]:
    """Every entry of `base` whose factors the model computes, shared ones included."""
    return [e for e in ledger["edits"] if e["base"] == base]


def user_edits(ledger: dict, base: str | None = None) -> list[dict]:
    """The edits a user made (of `base`, or of all bases), without the shared entries."""
    return [e for e in ledger["edits"] if e.get("kind") != SHARED and base in (None, e["base"])]


def shared_entry(ledger: dict, base: str) -> dict | None:
    return next((e for e in edits_for(ledger, base) if e.get("kind") == SHARED), None)


def safe_info(info: dict) -> dict:
    """Numbers, flags and number lists pass; free text does not (it could quote what was forgotten)."""
    kept = {}
    for key, value in (info or {}).items():
        if isinstance(value, (bool, int, float)):
            kept[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float)) for v in value):
            kept[key] = list(value)
        elif key in TEXT_INFO and isinstance(value, str) and len(value) <= 32:
            kept[key] = value
    return kept


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
