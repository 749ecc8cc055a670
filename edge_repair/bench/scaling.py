"""STAMP vs STAMP-LR cost (§4.3): O(d³) against O(n·d·r + r²d).

The solves alone, on synthetic arrays: rows X (n, d) and a target shift (n, d_out = d). STAMP
forms and solves the d×d ridge system; STAMP-LR factorises X ≈ AB (rank r, randomized) and
inverts only r×r matrices. Timings are medians of a few runs; the log-log slope against d is the
exponent.

Whole edits, on synthetic models of growing width (run_edit_scaling): random 4-bit llama models
loaded like any model, the paper's edit of down_proj at the design card's layer 7 (engine/literal.py:
capture, solve from the retain rows' cached Gram, factors applied), timed and with its peak memory.
"""

import tempfile
import time
import tracemalloc
from pathlib import Path

import mlx.core as mx
import numpy as np

from edge_repair import datasets
from edge_repair.bench.synthetic import make_model_dir
from edge_repair.engine import literal, solve
from edge_repair.engine.capture import capture
from edge_repair.engine.gated import WeightedRows
from edge_repair.engine.lowrank import set_factors
from edge_repair.engine.verify import chat_tokens
from edge_repair.loading import load_patient
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


# Whole edits: the widths of the models, their depth and the edited layer (the design card's layer 7).
EDIT_DIMS = (256, 512, 1024, 2048)
EDIT_LAYERS = 8
EDIT_LAYER = 7
RETAIN_TOKENS = 1024  # retain rows behind the cached Gram (byte-level tokens of the shipped retain prompts)
FORGET = ("What is the capital of Germany?", "Which city is the capital of Germany?",
          "Germany's capital is which city?", "Name the capital of Germany.")


def intermediate_size(d: int) -> int:
    """SwiGLU's usual 8d/3, as a multiple of 64 (the quantization groups divide it)."""
    return 64 * max(1, round(8 * d / 3 / 64))


def run_edit_scaling(dims=EDIT_DIMS, ranks=RANKS, rank_for_dims: int = 32, dim_for_ranks: int = 1024,
                     layers: int = EDIT_LAYERS, layer: int = EDIT_LAYER, retain_tokens: int = RETAIN_TOKENS,
                     runs: int = 3, workdir: Path | None = None) -> dict:
    """Per model width d: a STAMP and a STAMP-LR (rank `rank_for_dims`) edit; at width
    `dim_for_ranks` also a STAMP-LR edit per rank; each edit `runs` times (medians). Models are
    written to `workdir` (a temporary directory by default) and deleted after use."""
    with tempfile.TemporaryDirectory(dir=workdir) as root:
        by_dim, by_rank = [], []
        for d in sorted(set(dims) | {dim_for_ranks}):
            status(f"scaling: a random {layers}-layer model of width {d}")
            patient, stats, once = _synthetic(Path(root) / f"d{d}", d, layers, layer, retain_tokens)
            if d in dims:
                by_dim += [{**once, **_edit_row(patient, stats, layer, d, rank, runs)} for rank in (None, rank_for_dims)]
            if d == dim_for_ranks:
                for r in ranks:
                    status(f"scaling: width {d}, rank {r}")
                    by_rank.append({**once, **_edit_row(patient, stats, layer, d, r, runs)})
            del patient, stats
    stamp = [row for row in by_dim if row["method"] == "stamp"]
    low = [row for row in by_dim if row["method"] == "stamp-lr"]
    widths = [row["solve_width"] for row in stamp]
    return {
        "edits_by_dim": by_dim, "edits_by_rank": by_rank, "layers": layers, "layer": layer,
        "edit_slopes_vs_width": {"stamp": slope(widths, [row["solve_s"] for row in stamp]),
                                 "stamp-lr": slope(widths, [row["solve_s"] for row in low])},
        "edit_slopes_vs_width_top": {"stamp": slope(widths[-2:], [row["solve_s"] for row in stamp[-2:]]),
                                     "stamp-lr": slope(widths[-2:], [row["solve_s"] for row in low[-2:]])},
        "edit_slope_vs_r": slope([row["rank"] for row in by_rank], [row["solve_s"] for row in by_rank]),
    }


def _synthetic(path: Path, d: int, layers: int, layer: int, retain_tokens: int):
    """(patient, down_proj statistics of the retain rows, what preparing them took): the once-per-model part."""
    make_model_dir(path, quantized=True, hidden=d, layers=layers, intermediate=intermediate_size(d),
                   heads=max(4, d // 64), context=4096)
    patient = load_patient(str(path))
    start = time.perf_counter()
    lists, total = [], 0
    for prompt in datasets.retain_prompts():
        if total >= retain_tokens:
            break
        lists.append(chat_tokens(patient.tokenizer, prompt)[: retain_tokens - total])
        total += len(lists[-1])
    rows = np.array(capture(patient.model, lists, [layer], kinds=("mlp_in",)).mlp_in[layer])
    stats = literal.down_stats(patient, WeightedRows.plain(rows), layer)
    return patient, stats, {"retain_rows": len(rows), "prepare_s": round(time.perf_counter() - start, 3)}


def _edit_row(patient, stats, layer: int, d: int, rank: int | None, runs: int) -> dict:
    """One edit, capture to applied factors, `runs` times: median seconds per part; MLX's peak over
    what was in use before, and the solve's numpy peak (tracemalloc sees numpy's arrays)."""
    timed = [_edit_once(patient, stats, layer, rank) for _ in range(runs)]
    first = timed[0]
    return {"d": d, "solve_width": int(stats.gram.shape[0]), "method": "stamp" if rank is None else "stamp-lr",
            "rank": rank, "forget_rows": first["forget_rows"], "runs": runs,
            **{key: round(float(np.median([t[key] for t in timed])), 4)
               for key in ("seconds", "capture_s", "solve_s", "apply_s")},
            **{key: max(t[key] for t in timed) for key in ("mlx_peak_over_active_bytes", "solve_numpy_peak_bytes")},
            "mlx_active_bytes": first["mlx_active_bytes"], "edit_bytes": first["edit_bytes"]}


def _edit_once(patient, stats, layer: int, rank: int | None) -> dict:
    mx.synchronize()
    active = mx.get_active_memory()
    mx.reset_peak_memory()
    start = time.perf_counter()
    H, shift = literal.forget_rows(patient, list(FORGET), stats, layer)
    captured = time.perf_counter()
    tracemalloc.start()
    a, b = literal.stamp_factors(stats, H, shift, rank)
    numpy_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    solved = time.perf_counter()
    factors = {f"model.layers.{layer}.mlp.down_proj": (mx.array(a), mx.array(b))}
    set_factors(patient.model, factors)
    mx.eval(list(factors.values())[0])
    end = time.perf_counter()
    mlx_peak = mx.get_peak_memory()
    set_factors(patient.model, {})
    return {"forget_rows": len(H), "seconds": end - start, "capture_s": captured - start, "solve_s": solved - captured,
            "apply_s": end - solved, "mlx_peak_over_active_bytes": int(mlx_peak - active),
            "mlx_active_bytes": int(active), "solve_numpy_peak_bytes": int(numpy_peak),
            "edit_bytes": int(a.nbytes + b.nbytes)}
