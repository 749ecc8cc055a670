"""Benchmark results as readable tables (markdown) and as results/bench-<name>.md/.json files."""

import json
from pathlib import Path

from edge_repair.errors import StateError

MB = 1024 * 1024


def _mb(value) -> str:
    return "–" if value is None else f"{value / MB:.1f}"


def _num(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _device(device: dict) -> str:
    model = device.get("model", {})
    return (f"Device: {device['platform']} ({device['machine']}, {device['cpus']} CPUs), mlx {device['mlx']}, "
            f"mlx-lm {device['mlx_lm']}, BLAS {device['blas']}"
            + (f"; model {model['path']} ({_mb(model['bytes'])} MB on disk)" if model else ""))


def memory_markdown(result: dict) -> str:
    rows = [[name, p.get("role", "–"), _num(p["seconds"], 2), _mb(p["mlx_peak_bytes"]), _mb(p["rss_peak_bytes"]),
             _mb(p["rss_now_bytes"])] for name, p in result["memory"].items()]
    ratio = result["forget_over_chat"]
    verdict = "–" if ratio is None else ("within" if ratio <= result["target_ratio"] else "above")
    roles = result.get("roles") or {}
    return "\n\n".join([
        "## Memory per phase",
        table(["phase", "role", "seconds", "MLX peak MB", "RSS peak MB (lifetime)", "RSS now MB"], rows),
        *(["## MLX peak per role", table(["role", "MLX peak MB"], [[r, _mb(b)] for r, b in roles.items()]),
           "One model serves every role (the patient's), so its weights count in each role's peak."] if roles else []),
        f"forget peak / chat peak (MLX): {_num(ratio, 2)} — {verdict} the target ≤ {result['target_ratio']}",
        _device(result["device"])])


def scaling_markdown(result: dict) -> str:
    dim_rows = [[r["d"], r["n"], r["rank"], _num(r["stamp_s"], 4), _num(r["stamp_lr_s"], 4), _num(r["factorise_s"], 4),
                 f"{r['stamp_s'] / r['stamp_lr_s']:.1f}×", _num(r["stamp_gram_s"], 4), _num(r["stamp_lr_gram_s"], 4),
                 f"{r['stamp_gram_s'] / r['stamp_lr_gram_s']:.1f}×"] for r in result["by_dim"]]
    rank_rows = [[r["rank"], r["d"], r["n"], _num(r["stamp_s"], 4), _num(r["stamp_lr_s"], 4), _num(r["factorise_s"], 4),
                  _num(r["stamp_gram_s"], 4), _num(r["stamp_lr_gram_s"], 4)] for r in result["by_rank"]]
    s, top, r = result["slopes_vs_d"], result["slopes_vs_d_top"], result["slope_vs_r"]
    rows_note = "n rows, all moved; from the cached Gram: the retain rows' XᵀX cached, a forget prompt's rows moved"
    return "\n\n".join([
        "## Solve time vs hidden size d (median seconds)",
        table(["d", "n", "r", "STAMP", "STAMP-LR", "of which factorise", "speed-up",
               "STAMP, cached Gram", "STAMP-LR, cached Gram", "speed-up"], dim_rows),
        f"{rows_note}. log-log slope vs d: STAMP {s['stamp']} (top two d: {top['stamp']}), "
        f"STAMP-LR {s['stamp_lr']} (top two d: {top['stamp_lr']}); theory with n ∝ d: 3 vs 2 (n·d·r), "
        f"with n fixed: 3 vs 1. From the cached Gram: STAMP {s['stamp_gram']} (top two d: {top['stamp_gram']}), "
        f"STAMP-LR {s['stamp_lr_gram']} (top two d: {top['stamp_lr_gram']}); theory 3 vs 2 (d²·r)",
        "## Solve time vs rank r",
        table(["r", "d", "n", "STAMP", "STAMP-LR", "of which factorise", "STAMP, cached Gram", "STAMP-LR, cached Gram"],
              rank_rows),
        f"log-log slope of STAMP-LR vs r: {r['stamp_lr']} (from the cached Gram: {r['stamp_lr_gram']})",
        *_edit_scaling(result)])


def _edit_scaling(result: dict) -> list[str]:
    """The whole-edit tables (run_edit_scaling), when the run made them."""
    if not result.get("edits_by_dim"):
        return []
    def row(r):
        return [r["d"], r["solve_width"], r["method"], r["rank"] or "–", r["forget_rows"], _num(r["capture_s"], 3),
                _num(r["solve_s"], 3), _num(r["apply_s"], 3), _num(r["seconds"], 3), _mb(r["solve_numpy_peak_bytes"]),
                _mb(r["mlx_peak_over_active_bytes"]), _mb(r["mlx_active_bytes"]), _num(r["edit_bytes"] / MB, 2)]
    header = ["d", "d_ff (solved)", "method", "r", "forget rows", "capture s", "solve s", "apply s", "edit s",
              "solve numpy peak MB", "MLX peak over in use MB", "MLX in use MB", "edit MB"]
    first = result["edits_by_dim"][0]
    slopes, top = result["edit_slopes_vs_width"], result["edit_slopes_vs_width_top"]
    return [
        "## Whole edits on synthetic models of growing width",
        table(header, [row(r) for r in result["edits_by_dim"]]),
        f"Random 4-bit llama models, {result['layers']} layers, MLP width 8d/3 (+ the spare neurons loading adds), "
        f"loaded like any model (f32 copies for BLAS); the paper's down_proj edit at layer {result['layer']} "
        f"(engine/literal.py) from the Gram of {first['retain_rows']} retain rows, cached per model "
        f"(prepare s: {', '.join(_num(r['prepare_s'], 1) for r in result['edits_by_dim'] if r['method'] == 'stamp')}). "
        f"log-log slope of the solve vs d_ff: STAMP {slopes['stamp']} (top two: {top['stamp']}), "
        f"STAMP-LR {slopes['stamp-lr']} (top two: {top['stamp-lr']}) "
        "(theory from the cached Gram: 3 vs 2, d_ff³ against d_ff²·r). Memory: numpy's peak in the solve "
        "(tracemalloc), MLX's peak over what was in use before the edit, the model's own arrays (MLX in use), "
        "and the edit's factors.",
        "## Whole edits vs rank r",
        table(header, [row(r) for r in result["edits_by_rank"]]),
        f"log-log slope of the STAMP-LR solve vs r: {result['edit_slope_vs_r']}"]


def baselines_markdown(result: dict) -> str:
    rows = [[m.get("task", "knowledge"), m["method"], _num(m["seconds"], 1), _num(m.get("solve_seconds"), 1),
             _mb(m["peak_memory_bytes"]),
             _num(m["forgot"], 2), _num(m.get("f_rl"), 2), _num(m.get("r_rl"), 2), _num(m["others_kept"], 2),
             _num(m["ppl"], 3), m["trials"]] for m in result["methods"]]
    return "\n\n".join([
        "## Single-sample forgetting: training baselines vs STAMP",
        table(["task", "method", "seconds", "of which closed-form edit", "MLX peak MB", "answer gone (share of probes)", "F-RL ↓", "R-RL ↑",
               "other facts kept", "perplexity", "trials"], rows),
        "knowledge: facts the model answers correctly (question, 3 paraphrases, a held-out phrasing); "
        "misinformation: questions it answers wrongly (question and its paraphrases), the wrong answer is removed; "
        "personal: synthetic people taught by a LoRA fine-tune, one whole profile forgotten (4 taught questions, "
        "2 never-taught phrasings); F-RL/R-RL: ROUGE-L of the answers about the forgotten / the other people."
        + _implant_note(result),
        "seconds: the whole call (for STAMP methods: capture, solve and the on-device verification "
        "that the training baselines do not have; the closed-form edit alone is the next column).",
        f"Training baselines: {result['steps']} Adam steps on the MLPs of a few layers, "
        f"retain term on {result['retain_pairs']} retain prompts; stamp-gated's once-per-model negative bank "
        f"took {_num(result['stamp_gated_prepare_seconds'], 1)} s (not in its row); model {result['model']}",
        *_speedup_section(result.get("speedups") or [])])


def _speedup_section(speedups: list[dict]) -> list[str]:
    if not speedups:
        return []
    baselines = list(dict.fromkeys(b for s in speedups for b in s["closed_form"]))
    rows = [[s["task"], s["method"], *(f"{s['closed_form'].get(b, 0):.1f}× / {s['whole'].get(b, 0):.1f}×"
                                       for b in baselines)] for s in speedups]
    return ["## Speed-up over each training baseline",
            table(["task", "method", *(f"vs {b}" for b in baselines)], rows),
            "Each cell: the baseline's seconds over the closed-form edit's / over the whole verified call's. "
            "ga and npo run the whole model every step, as common implementations do; ga-lean and npo-lean "
            "compute the same losses (the same steps, the same weights) with the frozen blocks run once and "
            "the output head only at the reply tokens."]


def _implant_note(result: dict) -> str:
    implant = result.get("implant")
    if not implant:
        return ""
    took = "cached" if implant["cached"] else f"{implant['seconds']} s"
    return f" Fine-tune: {implant['steps']} LoRA steps ({took}); profiles taught {result.get('profiles_taught')}."


MARKDOWN = {"memory": memory_markdown, "scaling": scaling_markdown, "baselines": baselines_markdown}


def write_results(name: str, result: dict, out: Path) -> list[Path]:
    """results/bench-<name>.md and .json; returns their paths."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        md, js = out / f"bench-{name}.md", out / f"bench-{name}.json"
        md.write_text(f"# edge-repair bench {name}\n\n{MARKDOWN[name](result)}\n", encoding="utf-8")
        js.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as err:
        raise StateError(f"cannot write results to {out}: {err.strerror}") from None
    return [md, js]
