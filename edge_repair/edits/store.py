"""Persisted edits: a folder of factors per edit, the ledger, and one stacked adapter per base model.

Home layout:
  ledger.json          which edits exist, for which base (metadata only, never forgotten text)
  edits/<id>/          factors.safetensors, and probes.sealed (the probe prompts, encrypted); one
                       entry per base may be "shared": factors every edit needs (the engine's
                       follow-through), stacked while any edit of that base exists
  adapters/<base16>    symlink to the current stacked adapter folder of that base, in mlx-lm format

Crash safety: an edit's folder is complete before the ledger names it, the ledger is replaced
atomically and the adapter symlink is swapped atomically, so a killed process leaves the old state
or the new one; leftovers (temp folders, orphans, a stale adapter) are tidied by the next writer.
"""

import secrets
from pathlib import Path

import mlx.core as mx

from edge_repair.edits.adapters import (fitted, module_shapes, padded, read_config, read_factors, split_path,
                                        write_adapter)
from edge_repair.edits.fingerprint import fingerprint
from edge_repair.edits.ledger import (SHARED, edits_for, find_edit, new_id, now, read_ledger, safe_info, shared_entry,
                                     user_edits, write_ledger)
from edge_repair.edits.stock_base import path_for, stock_base
from edge_repair.engine.lowrank import LowRankEdit, set_factors, stack
from edge_repair.errors import EditError, StateError
from edge_repair.paths import home_dir
from edge_repair.storage.atomic import fsync_dir, publish_dir, remove_tree, sync_tree
from edge_repair.storage.keys import load_key
from edge_repair.storage.lock import home_lock
from edge_repair.storage.sealed import read_sealed, write_sealed

FACTORS = "factors.safetensors"
PROBES = "probes.sealed"
PROBES_LABEL = "edit-probes"


def apply_active_edits(patient) -> list[str]:
    """Make the patient compute its base plus every edit recorded for that base; returns their ids."""
    home = home_dir()
    base = fingerprint(patient.path, home)
    with home_lock(home, shared=True):
        ledger = read_ledger(home)
        stacked = stack([_load_factors(home, e) for e in edits_for(ledger, base)])
    shapes = module_shapes(patient.model)
    stacked = fitted(stacked, shapes)
    _check_shapes(stacked, shapes)
    set_factors(patient.model, stacked)
    return [e["id"] for e in user_edits(ledger, base)]


def record_edit(patient, edit: LowRankEdit, probes: list[str] | None = None,
                scrub: list[str] | None = None) -> str:
    """Persist `edit` for the patient's base and return its id.

    `probes` (the prompts that must now be forgotten) are kept only encrypted, for later checks;
    `scrub` terms (prompt, response, subject) are removed from the retain buffer first.
    """
    if not edit.factors:
        raise EditError("the edit is empty; nothing was recorded")
    home = home_dir()
    base = fingerprint(patient.path, home)
    shapes = module_shapes(patient.model)
    _check_shapes(stack([edit.factors, edit.shared]), shapes)
    key = load_key(home) if probes else None
    with home_lock(home):
        ledger = read_ledger(home)
        if scrub:
            from edge_repair.retain.buffer import RetainBuffer

            RetainBuffer.open(home).scrub(scrub)  # first: a crash after it only loses samples
        ledger["bases"][base] = {"path": str(Path(patient.path).resolve()),
                                 "num_layers": len(patient.model.layers), "shapes": shapes}
        if edit.shared and shared_entry(ledger, base) is None:
            _add_entry(home, ledger, base, LowRankEdit(edit.shared), None, None, kind=SHARED)
        edit_id = _add_entry(home, ledger, base, edit, probes, key)
        write_ledger(home, ledger)
        _tidy(home, ledger)
    return edit_id


def _add_entry(home: Path, ledger: dict, base: str, edit: LowRankEdit, probes, key, kind: str | None = None) -> str:
    """Write the edit's folder and name it in `ledger` (not yet written); returns its id."""
    edit_id = new_id(ledger)
    _write_edit_folder(home, edit_id, edit, probes, key)
    ledger["edits"].append({
        "id": edit_id, "created": now(), "base": base, "modules": sorted(edit.factors),
        "layers": sorted({split_path(p)[1] for p in edit.factors}), "rank": edit.rank, "probes": bool(probes),
        "info": safe_info(edit.info), **({"kind": kind} if kind else {})})
    return edit_id


def list_edits(base=None) -> list[dict]:
    """Every edit (or those of the base model directory `base`), oldest first, without any text."""
    home = home_dir()
    ledger = _current_ledger(home)
    wanted = fingerprint(Path(base), home) if base else None
    stock = {b: _stock_base_model(home, b) for b in _bases(ledger)}  # one adapter config read per base
    return [_row(home, ledger, e, stock[e["base"]]) for e in user_edits(ledger) if wanted in (None, e["base"])]


def show_edit(edit_id: str) -> dict:
    home = home_dir()
    ledger = _current_ledger(home)
    entry = find_edit(ledger, edit_id)
    return {**_row(home, ledger, entry), "modules": entry["modules"], "info": entry["info"]}


def undo_edit(edit_id: str) -> dict:
    """Remove one edit (any, not only the last); the others stay, restacked without it."""
    home = home_dir()
    with home_lock(home):
        ledger = read_ledger(home)
        entry = find_edit(ledger, edit_id)
        row = _row(home, ledger, entry)
        ledger["edits"].remove(entry)
        if not user_edits(ledger, entry["base"]):  # the last edit of its base takes the shared factors along
            ledger["edits"] = [e for e in ledger["edits"] if e["base"] != entry["base"]]
            ledger["bases"].pop(entry["base"], None)
        write_ledger(home, ledger)
        _tidy(home, ledger)
    return row


def read_probes(edit_id: str) -> list[str]:
    """The decrypted probe prompts of one edit (empty when none were stored)."""
    home = home_dir()
    with home_lock(home, shared=True):
        entry = find_edit(read_ledger(home), edit_id)
        if not entry.get("probes"):
            return []
        return list(read_sealed(home / "edits" / entry["id"] / PROBES, load_key(home), PROBES_LABEL))


def adapter_path(home: Path, base: str) -> Path:
    return home / "adapters" / base[:16]


def apply_adapter(patient, folder: Path) -> None:
    """Apply an edge-repair adapter folder to the patient, refusing one made for another base."""
    config = read_config(Path(folder))
    if not config or "base_model_fingerprint" not in config:
        raise StateError(f"{folder} is not an edge-repair adapter (no adapter_config.json with a base fingerprint)")
    mine = fingerprint(patient.path, home_dir())
    if config["base_model_fingerprint"] != mine:
        raise StateError(f"the adapter in {folder} belongs to base model {config.get('base_model')} "
                         f"({config['base_model_fingerprint'][:12]}), not {patient.path} ({mine[:12]})")
    set_factors(patient.model, read_factors(Path(folder)))


def _stock_base_model(home: Path, base: str) -> str | None:
    return (read_config(adapter_path(home, base)) or {}).get("stock_base_model")


def _row(home: Path, ledger: dict, entry: dict, stock_base_model: str | None = None) -> dict:
    """`stock_base_model`: read from the base's adapter folder when not given."""
    info = entry.get("info", {})
    verified = info.get("verified")
    return {"id": entry["id"], "created": entry["created"], "layers": entry["layers"], "rank": entry["rank"],
            "method": info.get("method"), "status": {True: "verified", False: "unverified"}.get(verified, "unknown"),
            "base_model": ledger["bases"].get(entry["base"], {}).get("path"), "base_fingerprint": entry["base"],
            "adapter_path": str(adapter_path(home, entry["base"])),
            "stock_base_model": stock_base_model or _stock_base_model(home, entry["base"])}


def _check_shapes(factors: dict, shapes: dict) -> None:
    for path, (a, b) in factors.items():
        if path not in shapes:
            raise EditError(f"the model has no linear module {path}")
        in_dims, out_dims = shapes[path]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != in_dims or b.shape[1] != out_dims or a.shape[1] != b.shape[0]:
            raise EditError(f"factors for {path} have shapes {tuple(a.shape)}, {tuple(b.shape)}; "
                            f"expected ({in_dims}, r), (r, {out_dims})")


def _write_edit_folder(home: Path, edit_id: str, edit: LowRankEdit, probes, key) -> None:
    root = home / "edits"
    root.mkdir(mode=0o700, exist_ok=True)
    tmp = root / f".tmp-{edit_id}"
    tmp.mkdir(mode=0o700)
    weights = {}
    for path, (a, b) in edit.factors.items():
        weights[f"{path}.lora_a"] = a.astype(mx.float32)
        weights[f"{path}.lora_b"] = b.astype(mx.float32)
    mx.save_safetensors(str(tmp / FACTORS), weights)
    if probes:
        write_sealed(tmp / PROBES, key, list(probes), PROBES_LABEL)
    sync_tree(tmp)
    tmp.rename(root / edit_id)
    fsync_dir(root)


def _load_factors(home: Path, entry: dict) -> dict:
    path = home / "edits" / entry["id"] / FACTORS
    try:
        weights = mx.load(str(path))
        return {m: (weights[f"{m}.lora_a"], weights[f"{m}.lora_b"]) for m in entry["modules"]}
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise StateError(f"edit {entry['id']} is damaged ({type(err).__name__}: {str(err)[:80]}); "
                         f"undo it with: edge-repair edits undo {entry['id']}") from None


def _current_ledger(home: Path) -> dict:
    """The ledger, with every base's adapter folder brought up to date if a crash left it stale."""
    with home_lock(home, shared=True):
        ledger = read_ledger(home)
        if all(_adapter_fresh(home, ledger, base) for base in _bases(ledger)):
            return ledger
    with home_lock(home):
        ledger = read_ledger(home)
        _tidy(home, ledger)
        return ledger


def _bases(ledger: dict) -> list[str]:
    return sorted({e["base"] for e in ledger["edits"]})


def _adapter_fresh(home: Path, ledger: dict, base: str) -> bool:
    config = read_config(adapter_path(home, base))
    return bool(config) and config.get("edits") == [e["id"] for e in edits_for(ledger, base)] \
        and (adapter_path(home, base) / "adapters.safetensors").is_file()


def _rebuild_adapter(home: Path, ledger: dict, base: str) -> None:
    entries = edits_for(ledger, base)
    info = ledger["bases"][base]
    weights, config = padded(fitted(stack([_load_factors(home, e) for e in entries]), info["shapes"]), info["shapes"],
                             info["num_layers"])
    config.update(base_model=info["path"], base_model_fingerprint=base, edits=[e["id"] for e in entries],
                  stock_base_model=stock_base(home, base, Path(info["path"]), info["shapes"]))
    root = home / "adapters"
    root.mkdir(mode=0o700, exist_ok=True)
    target = root / f".{base[:16]}-{secrets.token_hex(4)}"
    target.mkdir(mode=0o700)
    write_adapter(target, weights, config)
    sync_tree(target)
    publish_dir(target, adapter_path(home, base))


def _tidy(home: Path, ledger: dict) -> None:
    """Under the write lock: refresh stale adapters, then delete whatever the ledger no longer names."""
    live_bases = _bases(ledger)
    for base in live_bases:
        if not _adapter_fresh(home, ledger, base):
            _rebuild_adapter(home, ledger, base)
    ids = {e["id"] for e in ledger["edits"]}
    for leftover in home.glob(".ledger.json.tmp-*"):
        leftover.unlink(missing_ok=True)
    if (home / "edits").is_dir():
        for child in (home / "edits").iterdir():
            if child.name not in ids:
                remove_tree(child)
    bases = home / "bases"
    if bases.is_dir():
        for child in bases.iterdir():
            if child.name not in {path_for(home, b).name for b in live_bases}:
                remove_tree(child)
    root = home / "adapters"
    if root.is_dir():
        links = {adapter_path(home, b).name for b in live_bases}
        targets = {(root / name).resolve().name for name in links if (root / name).is_symlink()}
        for child in root.iterdir():
            if child.name not in links and child.name not in targets:
                remove_tree(child)
