"""STAMP vs STAMP-LR solve time on synthetic data (§4.3): O(d³) against O(n·d·r + r²d).

Both solve the same problem: rows X (n, d) and a target shift (n, d_out = d). STAMP forms and
solves the d×d ridge system; STAMP-LR factorises X ≈ AB (rank r, randomized) and inverts only
r×r matrices. Timings are medians of a few runs; the log-log slope against d is the exponent.
"""

import time

import numpy as np

from edge_repair.engine import solve
from edge_repair.progress import status

RANKS = (8, 16, 32, 64, 128)
FORGET_ROWS = 16
SOLVES = ("stamp", "stamp_lr", "stamp_gram", "stamp_lr_gram")
DIMS = (256, 512, 1024, 2048)


def _median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _problem(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    shift = rng.standard_normal((n, d), dtype=np.float32)
    return X, shift, np.zeros_like(shift)


def _times(X, shift, zero, rank: int | None, runs: int, lam: float = 1e-2) -> dict:
    # The engine's forms (literal.py): the retain rows' Gram is cached per model, only a forget
    # prompt's rows move.
    gram, X_f, shift_f = X.T @ X, X[:FORGET_ROWS], shift[:FORGET_ROWS]
    if rank is None:
        return {"stamp_s": _median_seconds(lambda: solve.stamp_update(X, shift, zero, lam), runs),
                "stamp_gram_s": _median_seconds(lambda: solve.stamp_update_gram(gram, X_f, shift_f, lam), runs)}
    return {"stamp_lr_s": _median_seconds(lambda: solve.stamp_lr_update(X, shift, zero, rank, lam), runs),
            "factorise_s": _median_seconds(lambda: solve.low_rank_factors(X, rank), runs),
            "stamp_lr_gram_s": _median_seconds(lambda: solve.stamp_lr_update_gram(gram, X_f, shift_f, rank, lam), runs)}


def slope(xs, ys) -> float | None:
    """Exponent k of y ∝ x^k, by least squares on logs."""
    pairs = [(x, y) for x, y in zip(xs, ys) if y and y > 0]
    if len(pairs) < 2:
        return None
    return round(float(np.polyfit(np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs]), 1)[0]), 2)


def run_scaling(ranks=RANKS, dims=DIMS, rows: int = 0, rank_for_dims: int = 32, dim_for_ranks: int = 1024,
                runs: int = 3) -> dict:
    """rows=0 means n = 2d (more rows than features, the harder case for STAMP-LR)."""
    n_of = lambda d: rows or 2 * d
    by_dim = []
    for d in dims:
        status(f"scaling: d={d}, n={n_of(d)}")
        X, shift, zero = _problem(n_of(d), d)
        by_dim.append({"d": d, "n": n_of(d), "rank": rank_for_dims,
                       **_times(X, shift, zero, None, runs), **_times(X, shift, zero, rank_for_dims, runs)})
    d = dim_for_ranks
    X, shift, zero = _problem(n_of(d), d)
    stamp = _times(X, shift, zero, None, runs)
    by_rank = []
    for r in ranks:
        status(f"scaling: d={d}, r={r}")
        by_rank.append({"d": d, "n": n_of(d), "rank": r, **stamp, **_times(X, shift, zero, r, runs)})
    dims_seen = [row["d"] for row in by_dim]
    return {
        "by_dim": by_dim, "by_rank": by_rank, "runs": runs,
        "slopes_vs_d": {name: slope(dims_seen, [row[f"{name}_s"] for row in by_dim]) for name in SOLVES},
        # Small sizes are overhead-bound; the exponent between the two largest d is closer to asymptotic.
        "slopes_vs_d_top": {name: slope(dims_seen[-2:], [row[f"{name}_s"] for row in by_dim[-2:]]) for name in SOLVES},
        "slope_vs_r": {name: slope([row["rank"] for row in by_rank], [row[f"{name}_s"] for row in by_rank])
                       for name in ("stamp_lr", "stamp_lr_gram")},
        "methods": ["stamp: solve.stamp_update (d×d ridge system, np.linalg.solve)",
                    "stamp_lr: solve.stamp_lr_update (randomized rank-r factorisation + r×r solves)",
                    f"stamp_gram, stamp_lr_gram: the same from the retain rows' cached Gram matrix, {FORGET_ROWS} "
                    "forget rows (solve.stamp_update_gram: d×d solve; solve.stamp_lr_update_gram: top-r "
                    "eigenpairs O(d²r), then O(r²d))",
                    "float32 numpy; median of `runs` timings; slope = log-log least-squares exponent"],
    }
