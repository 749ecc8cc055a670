"""Gated units from captured activations, one per layer: keyed on chosen positions, valued by the
residual shift a refusal context produces there.

Shared by an edit's answer and continuation units (forget.py) and the follow-through
(follow_through.py); the per-unit math is gated.py's.
"""

import numpy as np

from edge_repair.engine import gated
from edge_repair.engine.capture import Activations, capture
from edge_repair.engine.probes import refusal_context
from edge_repair.engine.solve import constant_direction
from edge_repair.engine.verify import chat_tokens


def refusal_captures(model, tokenizer, prompts: list[str], layers: list[int],
                     suffix: list[int] = ()) -> tuple[Activations, Activations]:
    """MLP inputs and residuals at each prompt's last token (with `suffix`: at each suffix token
    after it), asked plainly and after the refusal context; row i means the same token in both."""
    return plain_captures(model, tokenizer, prompts, layers, suffix), refusing_captures(model, tokenizer, prompts,
                                                                                       layers, suffix)


def plain_captures(model, tokenizer, prompts: list[str], layers: list[int], suffix: list[int] = ()) -> Activations:
    """refusal_captures' plain half (prompts of one edit share a pass: the system turn's cache, fuller batches)."""
    return capture(model, [chat_tokens(tokenizer, p) + list(suffix) for p in prompts], layers, batch_size=16,
                   **_kept(suffix))


def refusing_captures(model, tokenizer, prompts: list[str], layers: list[int], suffix: list[int] = ()) -> Activations:
    """refusal_captures' half after the refusal context."""
    return capture(model, [chat_tokens(tokenizer, p, refusal_context()) + list(suffix) for p in prompts], layers,
                   **_kept(suffix))


def _kept(suffix: list[int]) -> dict:
    return {"kinds": ("mlp_in", "resid"), "positions": list(range(-max(len(suffix), 1), 0))}


def layer_units(plain: Activations, refusing: Activations, layers: list[int], bank, taken: dict[int, set],
                near: dict | None = None, excluded: list[int] = (), ridge: float = 0.1, blind: bool = True,
                threshold: float = 0.0, rounds: int = gated.KEY_ROUNDS) -> list[tuple[int, gated.Unit, int]]:
    """(layer, unit, neuron) per layer; the neuron is the least used one not in `taken` (marked taken).

    Each layer's unit adds what the layers below have not: the shift's increment. `near`: layer ->
    near-miss rows (negatives beside the bank's); `excluded`: bank prompts left out of the negatives.
    """
    units, previous_shift = [], 0.0
    for layer in layers:
        X, X_ref = np.array(plain.mlp_in[layer]), np.array(refusing.mlp_in[layer])
        shift = np.array(refusing.resid[layer]) - np.array(plain.resid[layer])
        step, previous_shift = shift - previous_shift, shift
        retained = bank.without(list(excluded), layer)
        bias = constant_direction(retained.gram, retained.total()) if threshold else None
        negatives = np.array(near[layer]) if near else np.zeros((0, X.shape[1]), X.dtype)
        # Key on both the plain and the refusal-context activations: once earlier layers have
        # moved the residual toward refusal, this layer must still recognise the input.
        # Blind to how a refusal moves this layer's input: otherwise a unit learns "about to refuse"
        # and fires again on every similar question another edit is already refusing (overshoot).
        unit = gated.gated_unit(np.concatenate([X, X_ref]), negatives, step, lam=ridge, bank=retained, bias=bias,
                                threshold=threshold, blind=X_ref - X if blind else None, rounds=rounds)
        neuron = gated.least_used_neuron(bank.neuron_use[layer], taken[layer])
        taken[layer].add(neuron)
        units.append((layer, unit, neuron))
    return units
