"""Forgetting benchmark on the embedded default model (issue 3 targets).

One fact forgotten per trial from facts.json (question + 3 paraphrases used for the edit, a
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
from edge_repair.engine.forget import EngineConfig, ForgetRequest, forget
from edge_repair.engine.lowrank import set_factors
from edge_repair.engine.quality import perplexity
from edge_repair.engine.verify import greedy_replies, is_refusal, mentions, reply_tokens, unchanged
from edge_repair.loading import load_patient


def answers(fact):
    return [fact["answer"], *fact.get("aliases", [])]


def facts_kept(patient, facts):
    replies = greedy_replies(patient, [f["question"] for f in facts], 16)
    return [mentions(r, answers(f)) for r, f in zip(replies, facts)]


def trial(patient, fact, others, chat, chat_base, ppl_text, method, retain, config, strength):
    request = ForgetRequest(prompt=fact["question"], paraphrases=fact["paraphrases"], subject=fact["subject"],
                            method=method, strength=strength)
    result = forget(patient, request, retain, config)
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
    parser.add_argument("--out", default=None, help="directory for forget.json + forget.md (the README's table)")
    args = parser.parse_args()

    patient = load_patient(args.model)
    facts = datasets.facts()
    chat = datasets.chat_probes()[:20]
    retain = datasets.retain_prompts()
    config = EngineConfig()
    ppl_text = datasets.heldout_text()
    chat_base = [reply_tokens(patient.tokenizer, r) for r in greedy_replies(patient, chat, 16)]
    base_ppl = perplexity(patient, ppl_text)
    base_kept = facts_kept(patient, facts)
    print(f"base: facts answered {sum(base_kept)}/{len(facts)}  perplexity {base_ppl:.3f}", file=sys.stderr)
    rows, summaries = [], []
    for method in args.methods.split(","):
        for fact in facts[: args.trials]:
            others = [f for f in facts if f["id"] != fact["id"]]
            row, _ = trial(patient, fact, others, chat, chat_base, ppl_text, method, retain, config, args.strength)
            set_factors(patient.model, {})
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        summaries.append(summarise([r for r in rows if r["method"] == method], base_ppl))
    seq = sequential(patient, facts, args.sequential, retain, config) if args.sequential else None
    if args.out:
        write_results(Path(args.out), base_ppl, rows, summaries, seq)


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
    lines = ["| method | trials | answer gone (4 edit phrasings) | held-out phrasing gone | other facts kept | "
             "chat unchanged | perplexity | refusal | edit s (median) | solve s |", "|" + "---|" * 10]
    for s in summaries:
        lines.append(f"| {s['method']} | {s['trials']} | {s['forgot_all_edit_phrasings']}/{s['trials']} | "
                     f"{s['forgot_heldout']}/{s['trials']} | {s['others_kept_pct']}% | {s['chat_unchanged_pct']}% | "
                     f"{s['ppl_change_pct']:+.2f}% | {s['refusal_pct']}% | {s['median_seconds']} | {s['median_solve_seconds']} |")
    if seq:
        lines.append(f"\nSequential: {seq['count']} forgets in a row → still forgotten {seq['still_forgotten']}/{seq['count']}, "
                     f"other facts kept {seq['others_kept_pct']}%.")
    (out / "forget.md").write_text("\n".join(lines) + "\n")


def sequential(patient, facts, count, retain, config):
    forgotten = facts[:count]
    start = time.perf_counter()
    for fact in forgotten:
        forget(patient, ForgetRequest(prompt=fact["question"], paraphrases=fact["paraphrases"], subject=fact["subject"]),
               retain, config)
    rest = facts[count:]
    kept = facts_kept(patient, rest)
    replies = greedy_replies(patient, [f["question"] for f in forgotten], 16)
    still = [not mentions(r, answers(f)) for r, f in zip(replies, forgotten)]
    result = {"count": count, "seconds": round(time.perf_counter() - start, 1), "still_forgotten": sum(still),
              "others_kept_pct": round(100 * sum(kept) / max(len(rest), 1), 1)}
    print(json.dumps({"sequential": result}))
    return result


if __name__ == "__main__":
    main()
