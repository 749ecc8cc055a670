"""Single-sample forgetting, training baselines vs STAMP (paper Table 8) on the local model.

Two of the paper's tasks (§5.1): knowledge suppression (facts the model answers correctly) and
misinformation removal (questions it answers wrongly; the user says "That is incorrect. Remove
this."). Per trial one item: the forget pair is its question (+ paraphrases) with the model's own
greedy reply. Afterwards, as in scripts/bench_forget.py: is the answer gone on the question, the
paraphrases and a held-out phrasing; do the other (known) facts keep theirs; held-out perplexity.
"""

import statistics
import time

import mlx.core as mx

from edge_repair.bench import training
from edge_repair.bench.memory import temporary_home
from edge_repair.progress import status

STAMP_METHODS = ("stamp-gated", "stamp", "stamp-lr")
TASKS = ("knowledge", "misinformation")
ALL_METHODS = training.METHODS + STAMP_METHODS
RETAIN_PAIRS = 8     # retain prompts in the training baselines' retain term
REPLY_TOKENS = 16


def _answers(fact) -> list[str]:
    return [fact["answer"], *fact.get("aliases", [])]


def task_items(task: str) -> list[dict]:
    """A task's items in one shape: id, question, paraphrases, subject, the answer to remove
    (and, for facts, aliases and a held-out phrasing)."""
    from edge_repair import datasets

    if task == "knowledge":
        return datasets.facts()
    return [{"id": m["id"], "question": m["question"], "paraphrases": m["paraphrases"], "subject": m.get("subject"),
             "answer": m["wrong_answer"]} for m in datasets.misinformation()]


def produced(patient, items: list[dict]) -> list[dict]:
    """The items whose answer the model actually gives: only those can be forgotten."""
    from edge_repair.engine.verify import greedy_replies, mentions

    replies = greedy_replies(patient, [i["question"] for i in items], 24)
    return [i for i, r in zip(items, replies) if mentions(r, _answers(i))]


def evenly(items: list[dict], n: int) -> list[dict]:
    """n items taken evenly across the list (it is grouped by kind: capitals, elements, ...)."""
    n = min(n, len(items))
    return [items[k * len(items) // n] for k in range(n)]


def evaluate(patient, fact, others, ppl_text) -> dict:
    from edge_repair.engine.quality import perplexity
    from edge_repair.engine.verify import greedy_replies, mentions

    probes = [fact["question"], *fact["paraphrases"]] + ([fact["heldout_paraphrase"]] if "heldout_paraphrase" in fact else [])
    replies = greedy_replies(patient, probes, 24)
    other_replies = greedy_replies(patient, [f["question"] for f in others], REPLY_TOKENS) if others else []
    return {"forgot": sum(not mentions(r, _answers(fact)) for r in replies) / len(probes),
            "others_kept": (sum(mentions(r, _answers(f)) for r, f in zip(other_replies, others)) / len(others)
                            if others else None),
            "ppl": perplexity(patient, ppl_text), "reply": replies[0][:80]}


def _start() -> float:
    mx.synchronize()
    mx.reset_peak_memory()
    return time.perf_counter()


def _stop(start: float) -> tuple[float, int]:
    """Seconds and MLX peak bytes since `_start()`."""
    mx.synchronize()
    return time.perf_counter() - start, int(mx.get_peak_memory())


def run_baselines(model: str | None = None, trials: int = 1, methods=ALL_METHODS, steps: int = 20,
                  lr: float | None = None, others: int | None = None, patient=None, config=None,
                  tasks=TASKS, only_produced: bool = True) -> dict:
    """Rows per (task, trial, method) and one summary row per (task, method).

    `only_produced`: forget only items whose answer the base model gives (off for random test
    models); `patient`/`config` let tests go small."""
    from edge_repair.engine.forget import EngineConfig
    from edge_repair.errors import InputError

    unknown = [m for m in methods if m not in ALL_METHODS] + [t for t in tasks if t not in TASKS]
    if unknown:
        raise InputError(f"unknown method or task '{unknown[0]}'; methods: {', '.join(ALL_METHODS)}; "
                         f"tasks: {', '.join(TASKS)}")
    if trials < 1 or steps < 1:
        raise InputError("--trials and --steps must be at least 1")
    with temporary_home():  # stamp-gated caches its negatives in the home: keep the real one untouched
        return _run(model, trials, methods, steps, lr, others, patient, config or EngineConfig(), tasks, only_produced)


def _run(model, trials, methods, steps, lr, others, patient, config, tasks, only_produced) -> dict:
    from edge_repair import datasets
    from edge_repair.engine.forget import ForgetRequest, band, forget, prepare
    from edge_repair.engine.lowrank import set_factors
    from edge_repair.engine.verify import greedy_replies
    from edge_repair.errors import InputError
    from edge_repair.loading import load_patient

    patient = patient or load_patient(model)
    retain, ppl_text = datasets.retain_prompts(), datasets.heldout_text()
    facts = produced(patient, datasets.facts()) if only_produced else datasets.facts()
    chosen = {}
    for task in tasks:
        items = task_items(task)
        items = (facts if task == "knowledge" else produced(patient, items)) if only_produced else items
        if not items:
            raise InputError(f"the model gives none of the {task} task's answers; nothing to forget")
        chosen[task] = evenly(items, trials)
    tok, num_layers = patient.tokenizer, len(patient.model.layers)
    retain_replies = greedy_replies(patient, retain[:RETAIN_PAIRS], REPLY_TOKENS)
    retain_batch = training.make_batch(tok, retain[:RETAIN_PAIRS], retain_replies)
    bank, prepare_seconds = None, None
    if "stamp-gated" in methods:  # built once per model in real use, so timed apart from the forget
        status("baselines: the negative bank for stamp-gated")
        start = time.perf_counter()
        bank = prepare(patient, retain, config)
        prepare_seconds = round(time.perf_counter() - start, 2)
    rows = []
    for task, fact in ((t, f) for t, items in chosen.items() for f in items):
        rest = [f for f in facts if f["id"] != fact["id"]][:others]
        status(f"baselines: base model on {task} '{fact['id']}'")
        rows.append({"task": task, "method": "base", "fact": fact["id"], "seconds": 0.0, "peak_memory_bytes": 0,
                     **evaluate(patient, fact, rest, ppl_text)})
        prompts = [fact["question"], *fact["paraphrases"]]
        response = greedy_replies(patient, [fact["question"]], REPLY_TOKENS)[0]
        forget_batch = training.make_batch(tok, prompts, [response] * len(prompts))
        for method in methods:
            status(f"baselines: {method} on '{fact['id']}'")
            if method in training.METHODS:
                layers = training.rmu_layers(num_layers)[1] if method == "rmu" else band(num_layers, "auto")
                start = _start()
                with training.trained(patient, method, forget_batch, retain_batch, layers, steps, lr) as history:
                    seconds, peak = _stop(start)
                    row = {"task": task, "method": method, "fact": fact["id"], "seconds": seconds,
                           "peak_memory_bytes": peak, "layers": layers, "steps": steps, "loss": [history[0], history[-1]] if history else None,
                           **evaluate(patient, fact, rest, ppl_text)}
            else:
                request = ForgetRequest(prompt=fact["question"], paraphrases=fact["paraphrases"],
                                        subject=fact["subject"], method=method)
                start = _start()
                result = forget(patient, request, retain, config, bank)
                seconds, peak = _stop(start)
                row = {"task": task, "method": method, "fact": fact["id"], "seconds": seconds, "peak_memory_bytes": peak,
                       "verified": result.verification.verified, **evaluate(patient, fact, rest, ppl_text)}
                set_factors(patient.model, {})
            rows.append(row)
    return {"methods": summarise(rows), "trials": rows, "steps": steps, "retain_pairs": RETAIN_PAIRS,
            "stamp_gated_prepare_seconds": prepare_seconds, "model": str(patient.path)}


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for task, method in dict.fromkeys((r["task"], r["method"]) for r in rows):
        mine = [r for r in rows if r["method"] == method and r["task"] == task]
        kept = [r["others_kept"] for r in mine if r["others_kept"] is not None]
        out.append({"task": task, "method": method, "seconds": round(statistics.median(r["seconds"] for r in mine), 3),
                    "peak_memory_bytes": max(r["peak_memory_bytes"] for r in mine),
                    "forgot": round(statistics.mean(r["forgot"] for r in mine), 3),
                    "others_kept": round(statistics.mean(kept), 3) if kept else None,
                    "ppl": round(statistics.mean(r["ppl"] for r in mine), 3), "trials": len(mine)})
    return out
