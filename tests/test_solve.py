"""The closed-form solves: the randomized factorisation behind STAMP-LR."""

import numpy as np

from edge_repair.engine import solve


def _low_rank(n=300, d=120, r=10, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, r)) @ rng.standard_normal((r, d))).astype(np.float32)


def test_factors_reproduce_a_low_rank_matrix():
    X = _low_rank()
    A, B = solve.low_rank_factors(X, rank=16)
    assert A.shape == (300, 10) and B.shape == (10, 120)   # the numerical rank, not the requested one
    assert np.linalg.norm(A @ B - X) <= 1e-4 * np.linalg.norm(X)
    assert np.allclose(B @ B.T, np.eye(10), atol=1e-4)      # orthonormal rows: B⁺ = Bᵀ


def test_truncation_keeps_the_best_rank_r_part():
    rng = np.random.default_rng(2)
    X = _low_rank(r=12) + 1e-3 * rng.standard_normal((300, 120)).astype(np.float32)
    A, B = solve.low_rank_factors(X, rank=12)
    s = np.linalg.svd(X, compute_uv=False)
    best = np.sqrt((s[12:] ** 2).sum())                      # Eckart–Young optimum
    assert np.linalg.norm(A @ B - X) <= 1.05 * best


def test_stamp_lr_matches_stamp_on_low_rank_inputs():
    rng = np.random.default_rng(3)
    X = _low_rank(n=200, d=80, r=8)
    target = X @ rng.standard_normal((80, 40)).astype(np.float32)
    dense = solve.stamp_update(X, target, np.zeros_like(target), lam=1e-6)
    a, b = solve.stamp_lr_update(X, target, np.zeros_like(target), rank=8, lam=1e-6)
    assert np.allclose(X @ (a @ b), X @ dense, atol=1e-2 * np.abs(target).max())
