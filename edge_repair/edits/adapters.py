"""Edits as an mlx-lm adapter folder: `adapter_config.json` + `adapters.safetensors`.

mlx-lm gives a LoRA of one rank to every listed key in each of the last `num_layers` layers, so
the stacked factors are padded: zero factors for untouched modules, zero columns/rows up to the
common rank. Zeros add nothing, so stock `mlx_lm.load(base, adapter_path=...)` computes our edit.
"""

import json
import re
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from edge_repair.engine import spares
from edge_repair.errors import StateError

LAYER_PATH = re.compile(r"^(?P<prefix>(?:.*\.)?layers\.)(?P<index>\d+)\.(?P<key>.+)$")
CONFIG = "adapter_config.json"
WEIGHTS = "adapters.safetensors"


def split_path(path: str) -> tuple[str, int, str]:
    """`model.layers.16.mlp.gate_proj` -> (`model.layers.`, 16, `mlp.gate_proj`)."""
    match = LAYER_PATH.match(path)
    if not match:
        raise StateError(f"edit touches {path}, which is not inside a transformer layer")
    return match["prefix"], int(match["index"]), match["key"]


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    module = getattr(module, "linear", module)  # an already wrapped LoRALinear
    if isinstance(module, nn.QuantizedLinear):
        out_dims, packed = module.weight.shape
        return packed * 32 // module.bits, out_dims
    if isinstance(module, nn.Linear):
        out_dims, in_dims = module.weight.shape
        return in_dims, out_dims
    return None


def module_shapes(model: nn.Module) -> dict[str, list[int]]:
    """(in, out) of every linear inside a layer: what padding needs when no model is loaded."""
    shapes = {}
    for path, module in model.named_modules():
        if LAYER_PATH.match(path) and not path.endswith(".linear") and (dims := linear_dims(module)):
            shapes[path] = list(dims)
    return shapes


def fitted(factors: dict, shapes: dict) -> dict:
    """`factors` zero-padded to the modules' (in, out) dims: an edit recorded before the spare
    neurons (engine/spares.py) widened its modules never touches them, so zeros are exact."""
    out = {}
    for path, (a, b) in factors.items():
        in_dims, out_dims = shapes.get(path, (a.shape[0], b.shape[1]))
        grow_in, grow_out = in_dims - a.shape[0], out_dims - b.shape[1]
        if grow_in >= 0 and grow_out >= 0:
            a, b = spares.padded(a, grow_in, 0), spares.padded(b, 0, grow_out)
        out[path] = (a, b)
    return out


def padded(factors: dict, shapes: dict, num_layers: int) -> tuple[dict, dict]:
    """(weights, config) of the adapter that computes exactly `factors` in a model of `num_layers`."""
    parts = [split_path(p) for p in factors]
    prefix = parts[0][0]
    first = min(index for _, index, _ in parts)
    keys = sorted({key for _, _, key in parts})
    rank = max(a.shape[1] for a, _ in factors.values())
    weights = {}
    for index in range(first, num_layers):
        for key in keys:
            path = f"{prefix}{index}.{key}"
            if path not in shapes:
                raise StateError(f"the base model has no module {path}; the ledger does not match it")
            in_dims, out_dims = shapes[path]
            a, b = factors.get(path, (mx.zeros((in_dims, 0)), mx.zeros((0, out_dims))))
            extra = rank - a.shape[1]
            weights[f"{path}.lora_a"] = mx.concatenate([a.astype(mx.float32), mx.zeros((in_dims, extra))], axis=1)
            weights[f"{path}.lora_b"] = mx.concatenate([b.astype(mx.float32), mx.zeros((extra, out_dims))], axis=0)
    config = {"fine_tune_type": "lora", "num_layers": num_layers - first,
              "lora_parameters": {"rank": rank, "scale": 1.0, "dropout": 0.0, "keys": keys}}
    return weights, config


def write_adapter(folder: Path, weights: dict, config: dict) -> None:
    mx.save_safetensors(str(folder / WEIGHTS), weights)
    (folder / CONFIG).write_text(json.dumps(config, indent=1))


def read_config(folder: Path) -> dict | None:
    try:
        return json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        return None


def read_factors(folder: Path) -> dict:
    """The non-zero (a, b) pairs of an adapter folder, keyed by module path."""
    try:
        weights = mx.load(str(folder / WEIGHTS))
    except (OSError, ValueError, RuntimeError) as err:
        raise StateError(f"cannot read the adapter in {folder} ({str(err)[:120]})") from None
    factors = {}
    for name, a in weights.items():
        if name.endswith(".lora_a"):
            path = name[: -len(".lora_a")]
            b = weights.get(f"{path}.lora_b")
            if b is None:
                raise StateError(f"the adapter in {folder} has {name} without its lora_b")
            if mx.any(b != 0).item():
                factors[path] = (a, b)
    return factors
