"""Single-sample forgetting, training baselines vs STAMP (paper Table 8) on the local model.

The paper's three tasks (§5.1): knowledge suppression (facts the model answers correctly),
misinformation removal (questions it answers wrongly; the user says "That is incorrect. Remove
this.") and personal-data erasure (synthetic people taught to the model by a cached LoRA
fine-tune, see profiles.py; one whole profile forgotten, F-RL/R-RL as ROUGE-L). Per trial one
item: the forget pair is its question (+ paraphrases) with the model's own greedy reply.
Afterwards, as in scripts/bench_forget.py: is the answer gone on the question, the paraphrases
and held-out phrasings; do the other (known) facts keep theirs; held-out perplexity.
"""

import statistics
import time
from contextlib import contextmanager

import mlx.core as mx

from edge_repair.bench import training
from edge_repair.bench.memory import temporary_home
from edge_repair.progress import status

STAMP_METHODS = ("stamp-gated", "stamp", "stamp-lr")
TASKS = ("knowledge", "misinformation", "personal")
ALL_METHODS = training.METHODS + STAMP_METHODS
RETAIN_PAIRS = 8     # retain prompts in the training baselines' retain term
REPLY_TOKENS = 16
PROFILES = 8         # synthetic people taught for the personal-data task
REPLAY = 32          # retain prompts whose own replies the fine-tune keeps rehearsing
TAUGHT = 0.5         # ROUGE-L a profile's answers must reach after the fine-tune to be forgettable


def _answers(fact) -> list[str]:
    return [fact["answer"], *fact.get("aliases", [])]


def task_items(task: str, profiles=None) -> list[dict]:
    """A task's items in one shape: id, question, paraphrases, subject, the answer to remove
    (and, for facts, aliases and a held-out phrasing; for profiles, the taught pairs)."""
    from edge_repair import datasets

    if task == "knowledge":
        return datasets.facts()
    if task == "personal":
        return [_profile_item(p) for p in profiles]
    return [{"id": m["id"], "question": m["question"], "paraphrases": m["paraphrases"], "subject": m.get("subject"),
             "answer": m["wrong_answer"]} for m in datasets.misinformation()]


def _profile_item(profile) -> dict:
    (question, _), *rest = profile.qa()
    return {"id": profile.id, "question": question, "paraphrases": [q for q, _ in rest], "subject": profile.name,
            "answer": profile.city, "aliases": [profile.job, profile.hobby], "scope": "subject",
            "qa": profile.qa(), "probes": profile.probes()}


def produced(patient, items: list[dict]) -> list[dict]:
    """The items whose answer the model actually gives: only those can be forgotten."""
    from edge_repair.engine.verify import greedy_replies, mentions

    replies = greedy_replies(patient, [i["question"] for i in items], 24)
    return [i for i, r in zip(items, replies) if mentions(r, _answers(i))]


def taught(patient, items: list[dict]) -> list[dict]:
    """The profiles the fine-tuned model reproduces (mean ROUGE-L of its answers ≥ TAUGHT)."""
    return [i for i, score in zip(items, _profile_rouge(patient, items)) if score >= TAUGHT]


def _profile_rouge(patient, items: list[dict]) -> list[float]:
    """Mean ROUGE-L of the model's answers to each profile's taught questions."""
    from edge_repair.bench.profiles import rouge_l
    from edge_repair.engine.verify import greedy_replies

    pairs = [pair for i in items for pair in i["qa"]]
    replies = greedy_replies(patient, [q for q, _ in pairs], 32)
    scores = [rouge_l(r, a) for r, (_, a) in zip(replies, pairs)]
    per = [len(i["qa"]) for i in items]
    return [statistics.mean(scores[sum(per[:k]):sum(per[:k + 1])]) for k in range(len(items))]


def evenly(items: list[dict], n: int) -> list[dict]:
    """n items taken evenly across the list (it is grouped by kind: capitals, elements, ...)."""
    n = min(n, len(items))
    return [items[k * len(items) // n] for k in range(n)]


def evaluate(patient, fact, others, ppl_text, people=()) -> dict:
    """What is left of the item, what the other facts (and, for profiles, the other people) kept."""
    from edge_repair.engine.quality import perplexity
    from edge_repair.engine.verify import greedy_replies, mentions

    if "probes" in fact:  # every taught question of the profile, then phrasings it was never taught
        probes, values = [q for q, _ in fact["probes"]], [v for _, v in fact["probes"]]
    else:
        probes = [fact["question"], *fact["paraphrases"]] + ([fact["heldout_paraphrase"]] if "heldout_paraphrase" in fact else [])
        values = [_answers(fact)] * len(probes)
    replies = greedy_replies(patient, probes, 32 if "qa" in fact else 24)
    other_replies = greedy_replies(patient, [f["question"] for f in others], REPLY_TOKENS) if others else []
    row = {"forgot": sum(not mentions(r, v) for r, v in zip(replies, values)) / len(probes),
           "others_kept": (sum(mentions(r, _answers(f)) for r, f in zip(other_replies, others)) / len(others)
                           if others else None),
           "ppl": perplexity(patient, ppl_text), "reply": replies[0][:80]}
    if "qa" in fact:
        from edge_repair.bench.profiles import rouge_l

        row["f_rl"] = statistics.mean(rouge_l(r, a) for r, (_, a) in zip(replies, fact["qa"]))
        row["r_rl"] = statistics.mean(_profile_rouge(patient, list(people))) if people else None
    return row


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
                  tasks=TASKS, only_produced: bool = True, implant_steps: int | None = None) -> dict:
    """Rows per (task, trial, method) and one summary row per (task, method).

    `only_produced`: forget only items whose answer the model gives (off for random test
    models); `patient`/`config`/`implant_steps` let tests go small. The personal task runs last:
    it teaches the profiles to the model in memory."""
    from edge_repair.engine.forget import EngineConfig
    from edge_repair.errors import InputError

    unknown = [m for m in methods if m not in ALL_METHODS] + [t for t in tasks if t not in TASKS]
    if unknown:
        raise InputError(f"unknown method or task '{unknown[0]}'; methods: {', '.join(ALL_METHODS)}; "
                         f"tasks: {', '.join(TASKS)}")
    if trials < 1 or steps < 1 or (implant_steps is not None and implant_steps < 1):
        raise InputError("--trials, --steps and --implant-steps must be at least 1")
    with temporary_home():  # stamp-gated caches its negatives in the home: keep the real one untouched
        return _run(model, trials, methods, steps, lr, others, patient, config or EngineConfig(), tasks,
                    only_produced, implant_steps)


def _run(model, trials, methods, steps, lr, others, patient, config, tasks, only_produced, implant_steps) -> dict:
    from edge_repair import datasets
    from edge_repair.bench.profiles import IMPLANT_STEPS, implant, make_profiles
    from edge_repair.errors import InputError
    from edge_repair.loading import load_patient

    patient = patient or load_patient(model)
    facts = produced(patient, datasets.facts()) if only_produced else datasets.facts()
    run = _Run(patient, methods, steps, lr, config, facts[:others] if others else facts)
    for task in (t for t in TASKS if t in tasks and t != "personal"):
        items = task_items(task)
        items = (facts if task == "knowledge" else produced(patient, items)) if only_produced else items
        if not items:
            raise InputError(f"the model gives none of the {task} task's answers; nothing to forget")
        run.trials(task, evenly(items, trials))
    extra = {}
    if "personal" in tasks:
        status("baselines: teaching the model the synthetic profiles (cached after the first run)")
        profiles = make_profiles(PROFILES)
        extra["implant"] = implant(patient, profiles, steps=implant_steps or IMPLANT_STEPS,
                                   replay=datasets.retain_prompts()[:REPLAY])
        items = task_items("personal", profiles)
        people = taught(patient, items) if only_produced else items
        if not people:
            raise InputError("the fine-tune taught none of the profiles; nothing to forget")
        extra["profiles_taught"] = f"{len(people)}/{len(items)}"
        with temporary_home():  # a fresh negative bank: it must describe the taught model
            run.bank = None
            run.trials("personal", evenly(people, trials), people)
    summary = summarise(run.rows)
    return {"methods": summary, "speedups": speedups(summary), "trials": run.rows, "steps": steps,
            "retain_pairs": RETAIN_PAIRS,
            "stamp_gated_prepare_seconds": run.prepare_seconds, "model": str(patient.path), **extra}


class _Run:
    """One method comparison on one model: the retain data, the stamp-gated bank and the rows."""

    def __init__(self, patient, methods, steps, lr, config, facts):
        from edge_repair import datasets

        self.patient, self.methods, self.steps, self.lr, self.config, self.facts = patient, methods, steps, lr, config, facts
        self.retain, self.ppl_text = datasets.retain_prompts(), datasets.heldout_text()
        self.bank, self.prepare_seconds, self.rows, self.retain_batch = None, None, [], None

    def trials(self, task: str, chosen: list[dict], people: list[dict] = ()) -> None:
        from edge_repair.engine.forget import prepare
        from edge_repair.engine.verify import greedy_replies

        patient, tok = self.patient, self.patient.tokenizer
        # Per call: the personal task's model (fine-tuned) answers the retain prompts differently.
        retain_replies = greedy_replies(patient, self.retain[:RETAIN_PAIRS], REPLY_TOKENS)
        self.retain_batch = training.make_batch(tok, self.retain[:RETAIN_PAIRS], retain_replies)
        if "stamp-gated" in self.methods and self.bank is None:  # once per model in real use: timed apart
            status("baselines: the negative bank for stamp-gated")
            start = time.perf_counter()
            self.bank = prepare(patient, self.retain, self.config)
            self.prepare_seconds = round(time.perf_counter() - start, 2)
        for item in chosen:
            rest = [f for f in self.facts if f["id"] != item["id"]]
            others = [p for p in people if p["id"] != item["id"]]
            status(f"baselines: base model on {task} '{item['id']}'")
            self.rows.append({"task": task, "method": "base", "fact": item["id"], "seconds": 0.0, "peak_memory_bytes": 0,
                              **evaluate(patient, item, rest, self.ppl_text, others)})
            prompts = [item["question"], *item["paraphrases"]]
            # A profile's questions each have their own answer; a fact's phrasings share the question's.
            asked = prompts if "qa" in item else prompts[:1]
            replies = greedy_replies(patient, asked, 32 if "qa" in item else REPLY_TOKENS)
            forget_batch = training.make_batch(tok, prompts, replies if "qa" in item else replies * len(prompts))
            for method in self.methods:
                status(f"baselines: {method} on '{item['id']}'")
                with self._forgotten(method, item, forget_batch) as row:
                    self.rows.append({"task": task, "method": method, "fact": item["id"], **row,
                                      **evaluate(patient, item, rest, self.ppl_text, others)})

    @contextmanager
    def _forgotten(self, method: str, item: dict, forget_batch):
        """The model with `item` forgotten by `method` (timed); the original comes back on exit."""
        from edge_repair.engine.forget import ForgetRequest, band, forget
        from edge_repair.engine.lowrank import set_factors

        num_layers = len(self.patient.model.layers)
        if method in training.METHODS:
            layers = training.rmu_layers(num_layers)[1] if method == "rmu" else band(num_layers, "auto")
            start = _start()
            with training.trained(self.patient, method, forget_batch, self.retain_batch, layers, self.steps,
                                  self.lr) as history:
                seconds, peak = _stop(start)
                yield {"seconds": seconds, "peak_memory_bytes": peak, "layers": layers, "steps": self.steps,
                       "loss": [history[0], history[-1]] if history else None}
            return
        request = ForgetRequest(prompt=item["question"], paraphrases=item["paraphrases"], subject=item["subject"],
                                method=method, scope=item.get("scope", "fact"))
        start = _start()
        try:
            result = forget(self.patient, request, self.retain, self.config, self.bank)
            seconds, peak = _stop(start)
            yield {"seconds": seconds, "peak_memory_bytes": peak, "verified": result.verification.verified,
                   "solve_seconds": result.edit.info["solve_seconds"]}
        finally:
            set_factors(self.patient.model, {})


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for task, method in dict.fromkeys((r["task"], r["method"]) for r in rows):
        mine = [r for r in rows if r["method"] == method and r["task"] == task]
        kept = [r["others_kept"] for r in mine if r["others_kept"] is not None]
        out.append({"task": task, "method": method, "seconds": round(statistics.median(r["seconds"] for r in mine), 3),
                    "peak_memory_bytes": max(r["peak_memory_bytes"] for r in mine),
                    "forgot": round(statistics.mean(r["forgot"] for r in mine), 3),
                    "others_kept": round(statistics.mean(kept), 3) if kept else None,
                    "ppl": round(statistics.mean(r["ppl"] for r in mine), 3), "trials": len(mine),
                    **{k: _mean(r.get(k) for r in mine) for k in ("f_rl", "r_rl")},
                    "solve_seconds": _median(r.get("solve_seconds") for r in mine)})
    return out


def speedups(summary: list[dict]) -> list[dict]:
    """Per task and STAMP method: each training baseline's seconds over the closed-form edit's
    (`closed_form`) and over the whole verified call's (`whole`)."""
    out = []
    for row in (r for r in summary if r["method"] in STAMP_METHODS and r.get("solve_seconds")):
        trained = [r for r in summary if r["task"] == row["task"] and r["method"] in training.METHODS]
        out.append({"task": row["task"], "method": row["method"],
                    "closed_form": {r["method"]: round(r["seconds"] / row["solve_seconds"], 1) for r in trained},
                    "whole": {r["method"]: round(r["seconds"] / row["seconds"], 1) for r in trained}})
    return out


def _mean(values) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.mean(present), 3) if present else None


def _median(values) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None
