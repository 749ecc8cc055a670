"""Fuse the active edits into a standalone model: dequantize, add the delta, requantize if asked.

Requantizing an edited gate_proj to 4 or 8 bits can round the edit away, so by default edited
modules stay in float and only untouched ones keep their quantization; the check reports, probe
by probe, whether the fused model still forgets.
"""

from pathlib import Path

import mlx.nn as nn
from mlx.utils import tree_unflatten
from mlx_lm.tuner.lora import LoRALinear

from edge_repair.edits.model_dir import load_native, save_model_dir
from edge_repair.edits.store import apply_active_edits, list_edits, read_probes
from edge_repair.engine.lowrank import set_factors
from edge_repair.errors import EditError, InputError
from edge_repair.loading import Patient

CHECK_TOKENS = 24


def fuse_edits(model: Path, out: Path, requantize_all: bool = False, check: bool = True) -> dict:
    """Write base + active edits as a plain mlx-lm model at `out`; return what was done and checked."""
    model, out = Path(model).resolve(), Path(out).expanduser().resolve()
    edits = list_edits(model)
    if not edits:
        raise EditError(f"no edits are recorded for {model}; nothing to fuse")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not empty; choose a new --out")
    patient = load_native(model)
    probes = [(e["id"], i, p) for e in edits for i, p in enumerate(read_probes(e["id"]))] if check else []
    before = _answers(patient, probes)
    apply_active_edits(patient)
    healed = _answers(patient, probes)
    float_modules = _fuse_in_place(patient, requantize_all)
    save_model_dir(patient.model, patient.tokenizer, patient.config, model, out)
    fused = _answers(load_native(out, with_spares=False), probes)
    results = [{"edit": edit_id, "probe": i, "forgotten_by_adapter": healed[n] != before[n],
                "forgotten_after_fuse": fused[n] != before[n], "same_as_adapter": fused[n] == healed[n]}
               for n, (edit_id, i, _) in enumerate(probes)]
    return {"out": str(out), "edits": [e["id"] for e in edits], "requantized": "all" if requantize_all else "unedited",
            "float_modules": float_modules, "probes": len(results),
            "survives": all(r["forgotten_after_fuse"] for r in results if r["forgotten_by_adapter"]),
            "checks": results}


def _answers(patient: Patient, probes: list) -> list[str]:
    from edge_repair.generation import reply

    return [reply(patient, [{"role": "user", "content": p}], CHECK_TOKENS, 0.0) for _, _, p in probes]


def _fuse_in_place(patient: Patient, requantize_all: bool) -> list[str]:
    quantization = patient.config.get("quantization")
    fused, kept_float = [], []
    for path, module in patient.model.named_modules():
        if not isinstance(module, LoRALinear):
            continue
        quantized = isinstance(module.linear, nn.QuantizedLinear)
        requantize = requantize_all and quantized
        fused.append((path, module.fuse(dequantize=not requantize)))
        if quantized and not requantize:
            kept_float.append(path)
            quantization[path] = False  # mlx-lm's per-module override: load this one unquantized
    patient.model.update_modules(tree_unflatten(fused))
    set_factors(patient.model, {})
    return sorted(kept_float)
