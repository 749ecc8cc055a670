"""Closed-form solves of STAMP (paper §4.2): arrays in, factors out. No model, no mutation.

All solves are ridge pseudoinverses, X⁺ = (XᵀX + λI)⁻¹Xᵀ (Eq. 8). We solve for the *update*
ΔW = X⁺(O′ − X W) rather than for W from scratch (Eq. 9 as printed): with n ≪ d rows the
from-scratch minimum-norm W keeps only what the n rows span and wrecks every other input.
Rows whose target equals their current output (the retain buffer) pin ΔW to zero there.
Matrices here are in "x @ W" orientation: W is (d_in, d_out).
"""

import numpy as np


def ridge_pinv_apply(X: np.ndarray, Y: np.ndarray, lam: float, weights: np.ndarray | None = None) -> np.ndarray:
    """(XᵀΩX + λI)⁻¹ XᵀΩY — the ridge pseudoinverse of X applied to Y (Eq. 8–9), O(d³)."""
    Xw = X if weights is None else X * weights[:, None]
    gram = Xw.T @ X
    gram[np.diag_indices_from(gram)] += lam
    return np.linalg.solve(gram, Xw.T @ Y)


def stamp_update(X: np.ndarray, target: np.ndarray, current: np.ndarray, lam: float) -> np.ndarray:
    """Full STAMP: the dense ΔW (d_in, d_out) moving X @ W toward `target`; O(d³)."""
    return ridge_pinv_apply(X, target - current, lam)


def low_rank_factors(X: np.ndarray, rank: int, power_iters: int = 2, oversample: int = 8,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X ≈ A B with A (n, r), B (r, d) (Eq. 10's factorisation) by a randomized range finder.

    A full SVD costs O(n·d·min(n, d)) — as much as the dense solve STAMP-LR is meant to avoid —
    so: sketch X's range with r + `oversample` random vectors, sharpen it with a few power
    iterations (re-orthonormalised), then an exact SVD of the small (r+p, d) projection; O(n·d·r).
    """
    n, d = X.shape
    k = min(rank + oversample, n, d)
    sketch = np.random.default_rng(seed).standard_normal((d, k)).astype(X.dtype, copy=False)
    Q, _ = np.linalg.qr(X @ sketch)
    for _ in range(power_iters):
        Q, _ = np.linalg.qr(X.T @ Q)
        Q, _ = np.linalg.qr(X @ Q)
    U, S, Vt = np.linalg.svd(Q.T @ X, full_matrices=False)
    r = min(rank, int((S > S[0] * 1e-6).sum())) if S.size and S[0] > 0 else 0
    return (Q @ U[:, :r]) * S[:r], Vt[:r]


def stamp_lr_update(X: np.ndarray, target: np.ndarray, current: np.ndarray, rank: int,
                    lam: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """STAMP-LR: ΔW = B⁺ A⁺ (O′ − O) as factors (a: d_in×r, b: r×d_out); O(r³ + r²d) after A, B.

    A⁺ = (AᵀA + λI)⁻¹Aᵀ and B⁺ = Bᵀ(BBᵀ)⁻¹ (Eq. 10–11); the product is rank ≤ r, so it is
    stored as LoRA-style factors and never formed densely.
    """
    A, B = low_rank_factors(X, rank)
    r = A.shape[1]
    a_pinv = np.linalg.solve(A.T @ A + lam * np.eye(r), A.T)
    b_pinv = B.T @ np.linalg.inv(B @ B.T)
    return b_pinv, a_pinv @ (target - current)


def stamp_update_gram(gram: np.ndarray, X_f: np.ndarray, shift_f: np.ndarray, lam: float) -> np.ndarray:
    """Full STAMP when only the forget rows X_f move (by shift_f) and the retain rows stay put:
    ΔW = (G + X_fᵀX_f + λI)⁻¹ X_fᵀ shift_f, with G the retain rows' Gram matrix, cached per model
    (the retain rows' own term in XᵀΔ is zero). O(d³) whatever the number of retain rows."""
    system = X_f.T @ X_f
    system += gram  # in place: each d×d temporary is as large as the cached Gram
    system[np.diag_indices_from(system)] += lam
    return np.linalg.solve(system, X_f.T @ shift_f)


def top_eigenpairs(M: np.ndarray, rank: int, power_iters: int = 2, oversample: int = 8, seed: int = 0,
                   plus_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(V (d, r), eigenvalues (r,)): the top of the symmetric PSD matrix M + RᵀR (R = `plus_rows`,
    none by default) by randomized subspace iteration, O(d²·r); for M = XᵀX, V holds X's top right
    singular vectors and the values its σ². M + RᵀR is only ever applied, never formed: no d×d
    temporary beside M."""
    d = len(M)
    k = min(rank + oversample, d)

    def times(Q: np.ndarray) -> np.ndarray:
        return M @ Q if plus_rows is None else M @ Q + plus_rows.T @ (plus_rows @ Q)

    Q, _ = np.linalg.qr(times(np.random.default_rng(seed).standard_normal((d, k)).astype(M.dtype, copy=False)))
    for _ in range(power_iters):
        Q, _ = np.linalg.qr(times(Q))
    values, vectors = np.linalg.eigh(Q.T @ times(Q))
    order = np.argsort(values)[::-1][:rank]
    values = values[order]
    kept = values > max(values[0], 0) * 1e-12 if values.size else values.astype(bool)
    return Q @ vectors[:, order[kept]], values[kept]


def stamp_lr_update_gram(gram: np.ndarray, X_f: np.ndarray, shift_f: np.ndarray, rank: int,
                         lam: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """STAMP-LR (Eq. 10–11) from the same cached Gram as stamp_update_gram: with X = [X_f; X_r] ≈ AB,
    A = U_rS_r, B = V_rᵀ, B⁺ = V_r and A⁺(O′ − O) = (S_r² + λ)⁻¹ V_rᵀ X_fᵀ shift_f, since only the forget
    rows move. The top r of XᵀX = G + X_fᵀX_f cost O(d²·r); the factors then O(r²d), no d×d solve
    and no d×d array beside G."""
    V, sigma2 = top_eigenpairs(gram, rank, plus_rows=X_f)
    return V, ((X_f @ V).T @ shift_f) / (sigma2 + lam)[:, None]  # never the (d, d_out) X_fᵀ·shift


def steering_vector(reference_out: np.ndarray, forget_out: np.ndarray) -> np.ndarray:
    """r_SV = mean MLP_l over D_ref − mean MLP_l over D_f (Eq. 4)."""
    return reference_out.mean(axis=0) - forget_out.mean(axis=0)


def constant_direction(gram: np.ndarray, total: np.ndarray, lam: float = 1.0) -> np.ndarray:
    """c with c·x ≈ 1 on rows whose Gram matrix and row sum are given: normalised residuals carry
    a near-constant component, which stands in for the bias gate_proj/up_proj do not have."""
    return np.linalg.solve(gram + lam * np.eye(len(gram)), total)
