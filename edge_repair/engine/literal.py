"""The paper's recipe taken literally, for comparison: STAMP / STAMP-LR on down_proj at one layer.

Forget rows (every forget-prompt token after the shared chat-template prefix) get the
steering vector r_SV (Eq. 4) added to their MLP output; the retain buffer's rows keep theirs;
down_proj's update solves that by the ridge pseudoinverse (Eq. 8–9) or its low-rank form
(Eq. 10–11). Measured on SmolLM2: too weak to forget at small strength, destructive at large.

What the retain buffer and D_ref contribute does not depend on the forget pair, so it is computed
once per model and layer (`down_stats`) from the negative bank's rows: an edit then captures only
its own prompts, up to its layer.
"""

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from edge_repair import datasets
from edge_repair.engine import solve
from edge_repair.engine.capture import capture
from edge_repair.engine.gated import WeightedRows, silu
from edge_repair.engine.lowrank import mlp_weights
from edge_repair.engine.verify import chat_tokens, template_prefix

REFERENCES = 32  # refusal texts of D_ref (the paper uses 200)


@dataclass
class DownStats:
    gram: np.ndarray        # Hᵀ H of down_proj's inputs over the retain rows (d_ff, d_ff)
    reference: np.ndarray   # mean MLP output over D_ref's tokens (d,): r_SV's first term
    prefix: int             # chat-template tokens every prompt starts with (never forget rows)


def down_inputs(X: np.ndarray, gate_w: np.ndarray, up_w: np.ndarray) -> np.ndarray:
    """down_proj's inputs silu(x·W_gateᵀ)·(x·W_upᵀ) for MLP inputs X (n, d)."""
    return silu(X @ gate_w.T) * (X @ up_w.T)


def down_stats(patient, retain: WeightedRows, layer: int, chunk: int = 2048) -> DownStats:
    """The retain buffer's Gram at `layer` (from the bank's MLP inputs and their counts) and D_ref's mean output."""
    gate_w, up_w, _ = mlp_weights(patient.model, layer)
    gram = np.zeros((gate_w.shape[0], gate_w.shape[0]), np.float32)
    for start in range(0, len(retain.rows), chunk):  # chunked: all rows' inputs at once would be ~90 MB
        H = down_inputs(retain.rows[start:start + chunk].astype(np.float32, copy=False), gate_w, up_w)
        gram += (H.T * retain.counts[start:start + chunk]) @ H
    refs = [chat_tokens(patient.tokenizer, r) for r in datasets.refusals()[:REFERENCES]]
    prefix = len(template_prefix(patient.tokenizer))  # not shared_prefix(refs): every refusal starts "I"
    acts = capture(patient.model, refs, [layer], kinds=("mlp_out",))
    out = np.array(acts.mlp_out[layer])
    rows = [r for i in range(len(refs)) for r in acts.rows(i)[prefix:]]
    return DownStats(gram, out[rows].mean(axis=0), prefix)


def stamp_edit(patient, prompts: list[str], stats: DownStats, layer: int, rank: int | None = None,
               lam: float = 1e-2):
    """Returns strength -> factors; the capture and the solve happen once."""
    a, b = stamp_factors(stats, *forget_rows(patient, prompts, stats, layer), rank, lam)
    path = f"model.layers.{layer}.mlp.down_proj"
    return lambda strength: {path: (mx.array(a), mx.array((strength * b).astype(np.float32)))}


def forget_rows(patient, prompts: list[str], stats: DownStats, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, shift): down_proj's inputs at every forget token after the template, and r_SV (Eq. 4) for each."""
    lists = [chat_tokens(patient.tokenizer, p) for p in prompts]
    acts = capture(patient.model, lists, [layer], kinds=("mlp_in", "mlp_out"))
    gate_w, up_w, _ = mlp_weights(patient.model, layer)
    rows = [r for i in range(len(lists)) for r in acts.rows(i)[stats.prefix:]]
    H = down_inputs(np.array(acts.mlp_in[layer])[rows], gate_w, up_w)
    r_sv = solve.steering_vector(stats.reference[None], np.array(acts.mlp_out[layer])[rows])
    return H, np.broadcast_to(r_sv, (len(rows), r_sv.size)).astype(np.float32)


def stamp_factors(stats: DownStats, H: np.ndarray, shift: np.ndarray, rank: int | None = None,
                  lam: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """down_proj's update as x @ a @ b for unit strength (it is linear in the shift): STAMP's dense
    (d_ff, d) with b = I, or STAMP-LR's rank-r factors."""
    if rank is None:
        a = solve.stamp_update_gram(stats.gram, H, shift, lam)
        b = np.eye(a.shape[1], dtype=np.float32)
    else:
        a, b = solve.stamp_lr_update_gram(stats.gram, H, shift, rank, lam)
    return a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
