"""Forgetting benchmark on the embedded default model (issue 3 targets).

One fact forgotten per trial from facts.json (trials spread evenly over its kinds) (question + 3 paraphrases used for the edit, a
held-out paraphrase only for evaluation); afterwards: is the answer gone, do the other facts
keep theirs, are ordinary chat replies unchanged, perplexity on held-out text, refusal rate,
edit seconds. --sequential N forgets N facts one after another without undoing.

    python scripts/bench_forget.py --trials 10 --methods stamp-gated,stamp-lr,stamp
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import edge_repair  # noqa: F401  (fast BLAS before mlx)
from edge_repair import datasets
from edge_repair.bench.baselines import evenly
from edge_repair.engine.forget import EngineConfig, ForgetRequest, band, forget, prepare
from edge_repair.engine.lowrank import set_factors
from edge_repair.engine.quality import perplexity
from edge_repair.engine.verify import greedy_replies, greedy_tokens, is_refusal, mentions, unchanged
from edge_repair.loading import load_patient


def answers(fact):
    return [fact["answer"], *fact.get("aliases", [])]


def parse_layers(text):
    if text == "auto":
        return text
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def facts_kept(patient, facts):
    replies = greedy_replies(patient, [f["question"] for f in facts], 16)
    return [mentions(r, answers(f)) for r, f in zip(replies, facts)]


def trial(patient, fact, others, chat, chat_base, ppl_text, method, retain, config, strength, layers, bank, rank=None):
    request = ForgetRequest(prompt=fact["question"], paraphrases=fact["paraphrases"], subject=fact["subject"],
                            method=method, strength=strength, layers=layers, rank=rank)
    result = forget(patient, request, retain, config, bank)
    probes = [fact["question"], *fact["paraphrases"], fact["heldout_paraphrase"]]
    replies = greedy_replies(patient, probes, 24)
    row = {
        "fact": fact["id"], "method": method, "seconds": round(result.seconds, 2), "tries": result.tries,
        "verified": result.verification.verified, "history": result.edit.info["history"],
        "solve_seconds": result.edit.info["solve_seconds"],
        "forgot_edit_probes": sum(not mentions(r, answers(fact)) for r in replies[:4]),
        "forgot_heldout": int(not mentions(replies[4], answers(fact))),
        "refused": is_refusal(replies[0]),
        "others_kept": sum(facts_kept(patient, others)), "others": len(others),
        "chat_same": sum(unchanged(patient, chat, chat_base)), "chat": len(chat),
        "ppl": round(perplexity(patient, ppl_text), 3),
        "reply": replies[0][:80],
    }
    return row, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--methods", default="stamp-gated")
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--sequential", type=int, default=0)
    parser.add_argument("--config", default="{}", help='EngineConfig overrides as JSON, e.g. \'{"threshold": 0.4}\'')
    parser.add_argument("--layers", default="auto", help='"auto" or a range such as 16-29')
    parser.add_argument("--sweep", action="store_true",
                        help="paper Tables 5-7 style: layers, retain size and ablations, --trials facts each")
    parser.add_argument("--out", default=None, help="directory for forget.json + forget.md (the README's table)")
    args = parser.parse_args()

    patient = load_patient(args.model)
    facts = datasets.facts()
    chat = datasets.chat_probes()[:20]
    retain = datasets.retain_prompts()
    config = EngineConfig(**json.loads(args.config))
    ppl_text = datasets.heldout_text()
    chat_base = greedy_tokens(patient, chat, 16)
    base_ppl = perplexity(patient, ppl_text)
    base_kept = facts_kept(patient, facts)
    print(f"base: facts answered {sum(base_kept)}/{len(facts)}  perplexity {base_ppl:.3f}", file=sys.stderr)
    facts = [f for f, known in zip(facts, base_kept) if known]  # only what the model knows can be forgotten
    if args.sweep:
        return sweep(patient, facts, args.trials, retain, chat, chat_base, ppl_text, base_ppl, args.out)
    layers = parse_layers(args.layers)
    bank = prepare(patient, retain, config, layers)
    rows, summaries = [], []
    for method in args.methods.split(","):
        for fact in evenly(facts, args.trials):
            others = [f for f in facts if f["id"] != fact["id"]]
            row, _ = trial(patient, fact, others, chat, chat_base, ppl_text, method, retain, config, args.strength,
                           layers, bank)
            set_factors(patient.model, {})
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        if args.trials:
            summaries.append(summarise([r for r in rows if r["method"] == method], base_ppl))
    seq = (sequential(patient, facts, args.sequential, retain, config, bank, chat, chat_base, ppl_text, base_ppl, layers)
           if args.sequential else None)
    if args.out:
        write_results(Path(args.out), base_ppl, rows, summaries, seq)


# (label, method, layers, EngineConfig overrides, rank): one row each of the sweep table.
SWEEP = [
    ("default", "stamp-gated", "auto", {}, None),
    ("layers 24-29", "stamp-gated", "24-29", {}, None),
    ("layers 16-29", "stamp-gated", "16-29", {}, None),
    ("layer 7 only (design card)", "stamp-gated", "7", {}, None),
    ("retain negatives 32", "stamp-gated", "auto", {"negatives": 32}, None),
    ("retain negatives 64", "stamp-gated", "auto", {"negatives": 64}, None),
    ("threshold 0.6", "stamp-gated", "auto", {"threshold": 0.6}, None),
    ("ridge λ 1000", "stamp-gated", "auto", {"ridge": 1000.0}, None),
    ("key not blind to the refusal shift", "stamp-gated", "auto", {"blind": False}, None),
    ("shared follow-through on every edit (the default until session 13)", "stamp-gated", "auto",
     {"follow_through": "always"}, None),
    ("no shared follow-through, ever", "stamp-gated", "auto", {"follow_through": "never"}, None),
    ("paper-literal STAMP, layer 7", "stamp", "7", {}, None),
    ("paper-literal STAMP-LR r=8, layer 7", "stamp-lr", "7", {}, 8),
    ("paper-literal STAMP-LR r=64, layer 7", "stamp-lr", "7", {}, 64),
]


def sweep(patient, facts, trials, retain, chat, chat_base, ppl_text, base_ppl, out):
    summaries, banks = [], {}
    every_layer = sorted({l for _, _, text, _, _ in SWEEP for l in band(len(patient.layers), parse_layers(text))})
    for label, method, layer_text, overrides, rank in SWEEP:
        config, layers = EngineConfig(**overrides), parse_layers(layer_text)
        if config.negatives not in banks:  # one capture per retain size covers every layer choice
            banks[config.negatives] = prepare(patient, retain, config, every_layer)
        bank = banks[config.negatives]
        rows = []
        for fact in evenly(facts, trials):
            others = [f for f in facts if f["id"] != fact["id"]]
            row, result = trial(patient, fact, others, chat, chat_base, ppl_text, method, retain, config, 1.0, layers,
                                bank, rank)
            set_factors(patient.model, {})
            rows.append(row)
            print(json.dumps({"sweep": label, **row}), file=sys.stderr, flush=True)
        summary = {"label": label, "layers": layer_text, "negatives": config.negatives, "rank": rank or 1,
                   **summarise(rows, base_ppl)}
        summaries.append(summary)
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "forget-sweep.json").write_text(json.dumps({"base_ppl": base_ppl, "trials": trials, "rows": summaries}, indent=1))
        lines = ["| variant | method | layers | retain negatives | rank | verified | answer gone (all 5 phrasings) | "
                 "other facts kept | chat unchanged | perplexity | refusal | edit s | solve s |", "|" + "---|" * 13]
        for s in summaries:
            lines.append(f"| {s['label']} | {s['method']} | {s['layers']} | {s['negatives']} | {s['rank']} | "
                         f"{s['verified']}/{s['trials']} | {100 - s['forget_probe_leak_pct']:.0f}% | {s['others_kept_pct']}% | "
                         f"{s['chat_unchanged_pct']}% | {s['ppl_change_pct']:+.2f}% | {s['refusal_pct']}% | "
                         f"{s['median_seconds']} | {s['median_solve_seconds']} |")
        (out / "forget-sweep.md").write_text("\n".join(lines) + "\n")
    return summaries


def summarise(rows, base_ppl):
    n = len(rows)
    ppl = statistics.mean(r["ppl"] for r in rows)
    summary = {
        "method": rows[0]["method"], "trials": n,
        "forgot_all_edit_phrasings": sum(r["forgot_edit_probes"] == 4 for r in rows),
        "forgot_heldout": sum(r["forgot_heldout"] for r in rows),
        "forget_probe_leak_pct": round(100 * sum(4 - r["forgot_edit_probes"] + 1 - r["forgot_heldout"] for r in rows) / (5 * n), 1),
        "others_kept_pct": round(100 * sum(r["others_kept"] for r in rows) / sum(r["others"] for r in rows), 1),
        "chat_unchanged_pct": round(100 * sum(r["chat_same"] for r in rows) / sum(r["chat"] for r in rows), 1),
        "ppl_change_pct": round(100 * (ppl / base_ppl - 1), 2),
        "refusal_pct": round(100 * sum(r["refused"] for r in rows) / n, 1),
        "verified": sum(r["verified"] for r in rows),
        "median_seconds": round(statistics.median(r["seconds"] for r in rows), 2),
        "median_solve_seconds": round(statistics.median(r["solve_seconds"] for r in rows), 2),
    }
    print(json.dumps(summary))
    return summary


def write_results(out: Path, base_ppl, rows, summaries, seq):
    out.mkdir(parents=True, exist_ok=True)
    (out / "forget.json").write_text(json.dumps({"base_ppl": base_ppl, "summaries": summaries, "sequential": seq,
                                                  "rows": rows}, indent=1))
    lines = ["| method | trials | verified | answer gone (4 edit phrasings) | held-out phrasing gone | other facts kept | "
             "chat unchanged | perplexity | refusal | edit s (median) | solve s |", "|" + "---|" * 11]
    for s in summaries:
        lines.append(f"| {s['method']} | {s['trials']} | {s['verified']}/{s['trials']} | {s['forgot_all_edit_phrasings']}/{s['trials']} | "
                     f"{s['forgot_heldout']}/{s['trials']} | {s['others_kept_pct']}% | {s['chat_unchanged_pct']}% | "
                     f"{s['ppl_change_pct']:+.2f}% | {s['refusal_pct']}% | {s['median_seconds']} | {s['median_solve_seconds']} |")
    if seq:
        lines.append(f"\nSequential: {seq['count']} forgets in a row ({seq['verified']} verified and applied) → still "
                     f"forgotten {seq['still_forgotten']}/{seq['count']}, other facts kept {seq['others_kept_pct']}%, chat "
                     f"unchanged {seq['chat_unchanged_pct']}%, refusal {seq['refusal_pct']}%, perplexity "
                     f"{seq['ppl_change_pct']:+.2f}%.")
    (out / "forget.md").write_text("\n".join(lines) + "\n")


def sequential(patient, facts, count, retain, config, bank, chat, chat_base, ppl_text, base_ppl, layers):
    forgotten = evenly(facts, count)
    start, verified = time.perf_counter(), 0
    for fact in forgotten:
        result = forget(patient, ForgetRequest(prompt=fact["question"], paraphrases=fact["paraphrases"],
                                               subject=fact["subject"], layers=layers), retain, config, bank)
        verified += result.verification.verified
        print(json.dumps({"sequential": fact["id"], "verified": result.verification.verified,
                          "history": result.edit.info["history"], "guard": result.edit.info["perplexity_change"],
                          "guard_step": result.edit.info["perplexity_step"], "reason": result.verification.reason}),
              file=sys.stderr, flush=True)
    rest = [f for f in facts if f not in forgotten]
    kept = facts_kept(patient, rest)
    replies = greedy_replies(patient, [f["question"] for f in forgotten], 24)
    still = [not mentions(r, answers(f)) for r, f in zip(replies, forgotten)]
    result = {"count": count, "seconds": round(time.perf_counter() - start, 1), "verified": verified,
              "still_forgotten": sum(still), "others_kept_pct": round(100 * sum(kept) / max(len(rest), 1), 1),
              "chat_unchanged_pct": round(100 * sum(unchanged(patient, chat, chat_base)) / len(chat), 1),
              "refusal_pct": round(100 * sum(map(is_refusal, replies)) / count, 1),
              "ppl_change_pct": round(100 * (perplexity(patient, ppl_text) / base_ppl - 1), 2),
              "others_lost": [f["id"] for f, k in zip(rest, kept) if not k]}
    print(json.dumps({"sequential": result}))
    return result


if __name__ == "__main__":
    main()
