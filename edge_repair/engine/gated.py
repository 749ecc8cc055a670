"""Gated key→value units: the closed-form edit edge-repair uses by default ("stamp-gated").

One unit per edited layer is an extra SwiGLU neuron h = silu(g·x)·(u·x) writing v into the
residual stream. Every piece is a ridge pseudoinverse solve (Eq. 8): the key g is a ridge
classifier separating the forget prompt's last-position activations from retain and near-miss
activations; u = g/s makes h ≈ s·relu(w·x)², so weak false matches are squashed quadratically
(and there is no bias in gate/up to threshold with); v is the least-squares value that moves
the forget activations by δ, the residual shift a refusal context produces at that layer.
"""

from dataclasses import dataclass

import numpy as np

from edge_repair.engine.solve import ridge_pinv_apply


@dataclass
class Unit:
    gate: np.ndarray   # (d,)
    up: np.ndarray     # (d,)
    down: np.ndarray   # (d_out,)
    margin: float      # weakest positive score minus strongest negative score (classifier units)


def silu(z: np.ndarray) -> np.ndarray:
    return z / (1.0 + np.exp(-z))


def key_classifier(positives: np.ndarray, negatives: np.ndarray, lam: float, rounds: int = 3) -> np.ndarray:
    """Ridge classifier (+1 positives, −1 negatives), re-solved with hard negatives up-weighted.

    Iteratively reweighted least squares: each round doubles the weight of negatives scoring
    above −0.5, so rare look-alikes get pushed down instead of averaged away.
    """
    X = np.concatenate([positives, negatives])
    t = np.r_[np.ones(len(positives)), -np.ones(len(negatives))]
    neg_weight = np.ones(len(negatives))
    for _ in range(rounds):
        weights = np.r_[np.full(len(positives), neg_weight.sum() / max(len(positives), 1)), neg_weight]
        w = ridge_pinv_apply(X, t, lam, weights)
        neg_weight = np.where(negatives @ w > -0.5, neg_weight * 2.0, neg_weight)
    return w


def gated_unit(positives: np.ndarray, negatives: np.ndarray, delta: np.ndarray, lam: float = 0.1,
               sharpness: float = 12.0, strength: float = 1.0) -> Unit:
    """A unit that adds ≈ strength·delta on `positives` and ≈ 0 on `negatives`."""
    w = key_classifier(positives, negatives, lam)
    scores_pos, scores_neg = positives @ w, negatives @ w
    s = sharpness / max(float(scores_pos.min()), 1e-3)
    gate, up = s * w, w
    h = silu(positives @ gate) * (positives @ up)
    down = strength * delta / float(h.mean())
    return Unit(gate, up, down, float(scores_pos.min() - scores_neg.max()))


def unit_output(unit: Unit, X: np.ndarray) -> np.ndarray:
    """What the unit adds to the MLP output for rows X (for tests and diagnostics)."""
    return (silu(X @ unit.gate) * (X @ unit.up))[:, None] * unit.down[None, :]


def neuron_contribution(gate_w: np.ndarray, up_w: np.ndarray, down_w: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Mean output norm of each intermediate neuron on rows X.

    gate_w, up_w: (d_ff, d); down_w: (d_out, d_ff) as stored by nn.Linear.
    """
    hidden = silu(X @ gate_w.T) * (X @ up_w.T)
    return np.abs(hidden).mean(axis=0) * np.linalg.norm(down_w, axis=0)


def least_used_neuron(contribution: np.ndarray, taken: set[int]) -> int:
    """The neuron contributing least (and not already holding a unit): rewritten for a new unit."""
    contribution = contribution.copy()
    if taken:
        contribution[list(taken)] = np.inf
    return int(np.argmin(contribution))


def neuron_factors(unit: Unit, neuron: int, gate_w: np.ndarray, up_w: np.ndarray, down_w: np.ndarray):
    """Rank-1 factors that overwrite neuron `neuron` with `unit` in gate/up/down (x @ a @ b form)."""
    one_hot = np.zeros((1, gate_w.shape[0]), np.float32)
    one_hot[0, neuron] = 1.0
    return {
        "gate_proj": ((unit.gate - gate_w[neuron])[:, None].astype(np.float32), one_hot),
        "up_proj": ((unit.up - up_w[neuron])[:, None].astype(np.float32), one_hot),
        "down_proj": (one_hot.T.copy(), (unit.down - down_w[:, neuron])[None, :].astype(np.float32)),
    }
