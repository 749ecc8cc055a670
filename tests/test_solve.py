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


def _forget_and_retain(seed=4, n_f=4, n_r=300, d=80, d_out=40, r=8, noise=0.1):
    """Forget rows, retain rows of numerical rank r (plus noise) and the forget rows' target shift."""
    rng = np.random.default_rng(seed)
    X_f = rng.standard_normal((n_f, d)).astype(np.float32)
    X_r = _low_rank(n=n_r, d=d, r=r, seed=seed) + noise * rng.standard_normal((n_r, d)).astype(np.float32)
    shift_f = rng.standard_normal((n_f, d_out)).astype(np.float32)
    return X_f, X_r, shift_f


def test_the_gram_form_of_stamp_is_stamp_with_the_retain_rows_held():
    X_f, X_r, shift_f = _forget_and_retain()
    X = np.concatenate([X_f, X_r])
    shift = np.concatenate([shift_f, np.zeros((len(X_r), shift_f.shape[1]), np.float32)])
    dense = solve.stamp_update(X, shift, np.zeros_like(shift), lam=1e-2)
    from_gram = solve.stamp_update_gram(X_r.T @ X_r, X_f, shift_f, lam=1e-2)
    assert np.allclose(from_gram, dense, atol=1e-3 * np.abs(dense).max())


def test_top_eigenpairs_find_the_largest_of_a_psd_matrix():
    X_f, X_r, _ = _forget_and_retain(r=10)
    M = X_r.T @ X_r
    V, values = solve.top_eigenpairs(M, rank=10)
    exact = np.sort(np.linalg.eigvalsh(M.astype(np.float64)))[::-1][:10]
    assert np.allclose(values, exact, rtol=1e-3)
    assert np.allclose(V.T @ V, np.eye(10), atol=1e-4) and np.allclose(M @ V, V * values, atol=1e-2 * values[0])
    # M + RᵀR applied, never formed: the same pairs as from the summed matrix.
    V_plus, plus = solve.top_eigenpairs(X_r[:40].T @ X_r[:40], rank=10, plus_rows=X_r[40:])
    assert np.allclose(plus, values, rtol=1e-3) and np.allclose(M @ V_plus, V_plus * plus, atol=1e-2 * plus[0])


def test_the_gram_form_of_stamp_lr_matches_its_row_form():
    X_f, X_r, shift_f = _forget_and_retain(noise=1e-3)  # rank ≈ 8 + 4: both forms are then exact
    X = np.concatenate([X_f, X_r])
    shift = np.concatenate([shift_f, np.zeros((len(X_r), shift_f.shape[1]), np.float32)])
    a, b = solve.stamp_lr_update(X, shift, np.zeros_like(shift), rank=12, lam=1e-2)
    a_g, b_g = solve.stamp_lr_update_gram(X_r.T @ X_r, X_f, shift_f, rank=12, lam=1e-2)
    assert a_g.shape == (80, 12) and b_g.shape == (12, 40)
    assert np.allclose(a_g @ b_g, a @ b, atol=1e-3 * np.abs(a @ b).max())
