"""Gated key→value units: the closed-form edit edge-repair uses by default ("stamp-gated").

One unit per edited layer is an extra SwiGLU neuron h = silu(g·x)·(u·x) writing v into the
residual stream. Every piece is a ridge pseudoinverse solve (Eq. 8): the key g is a ridge
classifier separating the forget prompt's last-position activations from retain and near-miss
activations; u = g/s makes h ≈ s·relu(w·x)², so weak false matches are squashed quadratically
(and there is no bias in gate/up to threshold with); v is the least-squares value that moves
the forget activations by δ, the residual shift a refusal context produces at that layer.
The key solve is a ridge pseudoinverse whose retain Gram matrix is precomputed (O(d³) per
solve, independent of the buffer size); λ trades specificity (small) against misfiring on
inputs unlike the retain rows (large): see scripts/bench_forget.py --sweep.
"""

from dataclasses import dataclass

import numpy as np

# Reweighting rounds of the key solve. Measured: 6–8 rounds cut a stack's partial firing on other
# subjects but let units fire on prose (README, stacking); 3 keeps prose quiet.
KEY_ROUNDS = 3
# A unit's gate score on its weakest positive: silu saturates there, weak false matches are squashed.
SHARPNESS = 12.0


@dataclass
class Unit:
    gate: np.ndarray   # (d,)
    up: np.ndarray     # (d,)
    down: np.ndarray   # (d_out,)
    margin: float      # weakest positive score minus strongest negative score (classifier units)


def silu(z: np.ndarray) -> np.ndarray:
    return z * 0.5 * (1.0 + np.tanh(0.5 * z))  # z·sigmoid(z), without exp overflow for large |z|


@dataclass
class WeightedRows:
    """Negatives given once each with a multiplicity: a bank's distinct rows (the chat template's
    shared prefix makes ~44 % of a bank's token rows copies of each other). `gram` is
    Σ count·row rowᵀ, precomputed, so a key solve costs O(d³) however many rows there are."""
    rows: np.ndarray     # (n, d)
    counts: np.ndarray   # (n,) how many negatives each row stands for (0: left out)
    gram: np.ndarray     # (d, d)

    @classmethod
    def plain(cls, rows: np.ndarray) -> "WeightedRows":
        """Every row once."""
        return cls(rows, np.ones(len(rows)), rows.T @ rows)

    def total(self) -> np.ndarray:
        """Σ count·row."""
        return self.counts.astype(self.rows.dtype) @ self.rows


def key_classifier(positives: np.ndarray, negatives: np.ndarray, lam: float, bank: WeightedRows | None = None,
                   rounds: int = KEY_ROUNDS, blind: np.ndarray | None = None) -> np.ndarray:
    """Ridge classifier (+1 positives, −1 negatives and `bank`'s rows), re-solved with hard negatives up-weighted.

    Each round costs O(d³ + hard·d²) rather than O(n·d²) thanks to the bank's precomputed Gram.
    Iteratively reweighted least squares: each round doubles the weight of negatives scoring
    above −0.5, so rare look-alikes get pushed down instead of averaged away. The key is kept
    orthogonal to the `blind` directions (k, d).
    """
    d = positives.shape[1]
    bank = bank or WeightedRows.plain(np.zeros((0, d), positives.dtype))
    # Projecting the bank itself would cost O(n·d²) per layer; the projected key w = P·w scores the
    # raw rows exactly as the projected rows (P is symmetric), so only small matrices are projected.
    basis = np.linalg.svd(blind.astype(np.float64), full_matrices=False)[2] if blind is not None and len(blind) else None
    bank_gram = bank.gram
    if basis is not None:
        positives, negatives = _without(positives, basis), _without(negatives, basis)
        bank_gram = _without(_without(bank_gram, basis).T, basis)
    bank_sum, counts = _without(bank.total(), basis), bank.counts.astype(np.float64)
    near_w, bank_w = np.ones(len(negatives)), np.ones(len(bank.rows))  # bank_w: per distinct row
    for _ in range(rounds):
        pos_w = (near_w.sum() + counts @ bank_w) / max(len(positives), 1)
        hard = np.flatnonzero((bank_w != 1.0) & (counts > 0))
        extra, H = (bank_w[hard] - 1.0) * counts[hard], _without(bank.rows[hard], basis)
        gram = (bank_gram + (H.T * extra) @ H + (negatives.T * near_w) @ negatives
                + pos_w * positives.T @ positives + lam * np.eye(d))
        rhs = pos_w * positives.sum(axis=0) - negatives.T @ near_w - bank_sum - H.T @ extra
        w = np.linalg.solve(gram, rhs)
        near_w = np.where(negatives @ w > -0.5, near_w * 2.0, near_w)
        bank_w = np.where(scores(bank.rows, w) > -0.5, bank_w * 2.0, bank_w)
    return w


def scores(rows: np.ndarray, key: np.ndarray) -> np.ndarray:
    """rows @ key in the rows' precision: a float64 key would have numpy copy the whole float32
    bank (7710×576 per layer on the default model) to float64 first (measured: 7.5 ms against 0.2 ms)."""
    return rows @ key.astype(rows.dtype, copy=False)


def _without(rows: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """`rows` with their components along the orthonormal `basis` rows removed (None: unchanged)."""
    return rows if basis is None else rows - (rows @ basis.T) @ basis


def gated_unit(positives: np.ndarray, negatives: np.ndarray, targets: np.ndarray, lam: float = 0.1,
               sharpness: float = SHARPNESS, strength: float = 1.0, bank: WeightedRows | None = None,
               bias: np.ndarray | None = None, threshold: float = 0.0, blind: np.ndarray | None = None,
               rounds: int = KEY_ROUNDS) -> Unit:
    """A unit that adds ≈ strength·targets on `positives` and ≈ 0 on `negatives`.

    `targets`: one shift (d_out,) for every positive, or one row per positive for the first
    len(targets) positives; the value is their least-squares fit (Eq. 8 with one hidden unit).
    With `bias` (a direction c with c·x ≈ 1 on every input) the unit only opens once the key
    score passes `threshold`: h ≈ s·relu(w·x − θ)², the bias SwiGLU's gate and up lack.
    `blind`: directions the key ignores (see key_classifier).
    """
    w = key_classifier(positives, negatives, lam, bank, rounds=rounds, blind=blind)
    key = w if bias is None else w - threshold * bias
    scores_pos = positives @ key
    negative_scores = [negatives @ key] + ([scores(bank.rows, key)[bank.counts > 0]] if bank is not None else [])
    s = sharpness / max(float(scores_pos.min()), 1e-3)
    gate, up = s * key, key
    targets = np.broadcast_to(targets, (len(positives), targets.shape[-1])) if targets.ndim == 1 else targets
    fitted = positives[: len(targets)]
    h = silu(fitted @ gate) * (fitted @ up)
    down = strength * (h @ targets) / float(h @ h)
    return Unit(gate, up, down, float(scores_pos.min() - np.concatenate(negative_scores).max()))


def unit_output(unit: Unit, X: np.ndarray) -> np.ndarray:
    """What the unit adds to the MLP output for rows X (for tests and diagnostics)."""
    return (silu(X @ unit.gate) * (X @ unit.up))[:, None] * unit.down[None, :]


def relative_firing(gates: np.ndarray, ups: np.ndarray, X: np.ndarray) -> np.ndarray:
    """(n, k): each unit's activation on rows X as a fraction of its activation on its weakest
    positive (gated_unit puts that positive's gate score at SHARPNESS, with gate = s·up). For tests
    and diagnostics: how far units reach beyond their keys (README, stacking)."""
    scale = np.einsum("kd,kd->k", gates, ups) / np.maximum(np.einsum("kd,kd->k", ups, ups), 1e-12)
    weakest = silu(np.float64(SHARPNESS)) * SHARPNESS / np.maximum(scale, 1e-12)
    return silu(X @ gates.T) * (X @ ups.T) / weakest


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


def neuron_factors(unit: Unit, neuron: int, base) -> dict:
    """Rank-1 factors that overwrite neuron `neuron` with `unit` in gate/up/down (x @ a @ b form);
    `base`: the neuron's own weights (lowrank.NeuronWeights)."""
    one_hot = np.zeros((1, base.width), np.float32)
    one_hot[0, neuron] = 1.0
    return {
        "gate_proj": ((unit.gate - base.gate)[:, None].astype(np.float32), one_hot),
        "up_proj": ((unit.up - base.up)[:, None].astype(np.float32), one_hot),
        "down_proj": (one_hot.T.copy(), (unit.down - base.down)[None, :].astype(np.float32)),
    }
