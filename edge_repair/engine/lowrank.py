"""A weight edit as low-rank factors per linear module, applied through mlx-lm's LoRALinear.

An edit maps module paths (as in `model.named_modules()`, e.g. `model.layers.16.mlp.gate_proj`)
to factors (a, b) with a: (in, r) and b: (r, out), so the module computes `W x + (x a) b`.
That is exactly an mlx-lm LoRA adapter with scale 1, so edits persist in its format and stock
`mlx_lm.generate --adapter-path` reproduces them.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_unflatten
from mlx_lm.tuner.lora import LoRALinear

Factors = dict[str, tuple[mx.array, mx.array]]


@dataclass
class LowRankEdit:
    factors: Factors
    info: dict = field(default_factory=dict)  # method, layers, rank, ... (never forgotten text)
    # Factors shared by every edit of a base model, needed from this edit on (the engine's
    # follow-through); the store keeps them while any edit of that base is active.
    shared: Factors = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return max((a.shape[1] for a, _ in self.factors.values()), default=0)


def stack(edits: list[Factors]) -> Factors:
    """Concatenate the factors of several edits module by module: their deltas add up."""
    stacked: dict[str, list] = {}
    for factors in edits:
        for path, (a, b) in factors.items():
            stacked.setdefault(path, []).append((a, b))
    return {
        path: (mx.concatenate([a for a, _ in pairs], axis=1), mx.concatenate([b for _, b in pairs], axis=0))
        for path, pairs in stacked.items()
    }


def base_linear(module: nn.Module) -> nn.Module:
    return module.linear if isinstance(module, LoRALinear) else module


def set_factors(model: nn.Module, factors: Factors) -> None:
    """Make the model compute base + the given factors (and nothing else) in every touched module.

    Modules already wrapped but absent from `factors` go back to their base layer.
    """
    modules = dict(model.named_modules())
    updates = []
    for path, module in modules.items():
        if isinstance(module, LoRALinear) and path not in factors:
            updates.append((path, module.linear))
    for path, (a, b) in factors.items():
        if path not in modules:
            raise KeyError(f"the model has no module {path}")
        linear = base_linear(modules[path])
        wrapped = LoRALinear.from_base(linear, r=a.shape[1], scale=1.0)
        wrapped.lora_a = a.astype(mx.float32)
        wrapped.lora_b = b.astype(mx.float32)
        updates.append((path, wrapped))
    if updates:
        model.update_modules(tree_unflatten(updates))
    mx.eval(model.parameters())


def current_factors(model: nn.Module) -> Factors:
    return {path: (m.lora_a, m.lora_b) for path, m in model.named_modules() if isinstance(m, LoRALinear)}


def edited_layers(model: nn.Module) -> set[int]:
    """Indices of the blocks active edits touch (paths look like `model.layers.16.mlp.gate_proj`)."""
    return {int(path.split(".layers.")[1].split(".")[0]) for path in current_factors(model)}


def mlp_weights(model: nn.Module, layer: int):
    """Base gate, up, down weights of one MLP as float32 numpy arrays (dequantized if needed)."""
    return tuple(np.array(w) for w in _base_mlp(model, layer))


@dataclass
class NeuronWeights:
    """One intermediate neuron's base weights: its gate and up rows, its down column."""

    gate: np.ndarray   # (d,)
    up: np.ndarray     # (d,)
    down: np.ndarray   # (d_out,)
    width: int         # the MLP's intermediate size


def neuron_weights(model: nn.Module, layer: int, neuron: int) -> NeuronWeights:
    """What a unit rewriting `neuron` replaces (copying only it: the whole MLP is ~10 MB)."""
    gate, up, down = _base_mlp(model, layer)
    return NeuronWeights(np.array(gate[neuron]), np.array(up[neuron]), np.array(down[:, neuron]), gate.shape[0])


def _base_mlp(model: nn.Module, layer: int) -> list[mx.array]:
    mlp = model.layers[layer].mlp
    out = []
    for name in ("gate_proj", "up_proj", "down_proj"):
        linear = base_linear(getattr(mlp, name))
        w = linear.weight
        if isinstance(linear, nn.QuantizedLinear):
            w = mx.dequantize(w, linear.scales, linear.biases, linear.group_size, linear.bits)
        out.append(w.astype(mx.float32))
    return out


def rewritten_neurons(model: nn.Module) -> dict[int, set[int]]:
    """Per edited layer, the neurons active gated units have rewritten (their one-hot rows in gate_proj's b)."""
    return {int(path.split(".layers.")[1].split(".")[0]): {int(j) for j in np.flatnonzero(np.abs(np.array(b)).sum(axis=0))}
            for path, (_, b) in current_factors(model).items() if path.endswith(".mlp.gate_proj")}


@contextmanager
def base_model(model: nn.Module):
    """Temporarily the base model: every edit removed, and put back afterwards (even on error)."""
    edits = current_factors(model)
    if edits:
        set_factors(model, {})
    try:
        yield model
    finally:
        if edits:
            set_factors(model, edits)
